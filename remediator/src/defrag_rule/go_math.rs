//! Go's `math.Pow`, which goval's `**` calls: integer exponents by repeated squaring of the
//! mantissa, so that a rule's powers round exactly as etcd-defrag's do (libm's `pow` rounds
//! some of them differently in the last bit).

/// 2^63: the floats Go converts to a 64-bit int and back unchanged are the whole ones in
/// [-2^63, 2^63).
pub(super) const TWO_TO_63: f64 = 9_223_372_036_854_775_808.0;

pub(super) fn pow(x: f64, y: f64) -> f64 {
    let is_odd_int = |v: f64| {
        if v.abs() >= (1u64 << 53) as f64 {
            return false;
        }
        let (fraction, whole) = libm::modf(v);
        fraction == 0.0 && (whole as i64) & 1 == 1
    };
    if y == 0.0 || x == 1.0 {
        return 1.0;
    }
    if y == 1.0 {
        return x;
    }
    if x.is_nan() || y.is_nan() {
        return f64::NAN;
    }
    if x == 0.0 {
        return if y < 0.0 {
            if x.is_sign_negative() && is_odd_int(y) {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            }
        } else if x.is_sign_negative() && is_odd_int(y) {
            x
        } else {
            0.0
        };
    }
    // |y| so large that x**y overflows or underflows, whatever x but ±1.
    let beyond = |x: f64, y: f64| {
        if x == -1.0 {
            1.0
        } else if (x.abs() < 1.0) == (y > 0.0) {
            0.0
        } else {
            f64::INFINITY
        }
    };
    if y.is_infinite() {
        return beyond(x, y);
    }
    if x.is_infinite() {
        if x < 0.0 {
            return pow(1.0 / x, -y);
        }
        return if y < 0.0 { 0.0 } else { f64::INFINITY };
    }
    if y == 0.5 {
        return x.sqrt();
    }
    if y == -0.5 {
        return 1.0 / x.sqrt();
    }

    let (mut yf, mut yi) = libm::modf(y.abs());
    if yf != 0.0 && x < 0.0 {
        return f64::NAN;
    }
    if yi >= TWO_TO_63 {
        return beyond(x, y);
    }
    let mut a1 = 1.0;
    let mut ae: i32 = 0;
    if yf != 0.0 {
        if yf > 0.5 {
            yf -= 1.0;
            yi += 1.0;
        }
        a1 = libm::exp(yf * libm::log(x));
    }
    let (mut x1, mut xe) = libm::frexp(x);
    let mut i = yi as i64;
    while i != 0 {
        if !(-(1 << 12)..=(1 << 12)).contains(&xe) {
            ae += xe;
            break;
        }
        if i & 1 == 1 {
            a1 *= x1;
            ae += xe;
        }
        x1 *= x1;
        xe <<= 1;
        if x1 < 0.5 {
            x1 += x1;
            xe -= 1;
        }
        i >>= 1;
    }
    if y < 0.0 {
        a1 = 1.0 / a1;
        ae = -ae;
    }
    libm::ldexp(a1, ae)
}

#[cfg(test)]
mod tests {
    use super::pow;

    #[test]
    fn integer_powers_are_exact_and_special_cases_follow_go() {
        assert_eq!(pow(2.0, 10.0), 1024.0);
        assert_eq!(pow(10.0, -1.0), 0.1);
        assert_eq!(pow(2.0, 0.5), std::f64::consts::SQRT_2);
        assert!(pow(-8.0, 1.0 / 3.0).is_nan());
        assert_eq!(pow(0.0, -1.0), f64::INFINITY);
        assert_eq!(pow(-0.0, -3.0), f64::NEG_INFINITY);
        assert_eq!(pow(f64::NAN, 0.0), 1.0);
    }
}
