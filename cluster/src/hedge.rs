//! Asking one of several members for a cluster-wide answer (MemberList, AlarmList) without
//! letting a dead member delay it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};

use crate::member_client::MemberClient;
use crate::model::ProbeError;

/// Asks `clients` in order for the same answer. The next member is asked as soon as the
/// previous one failed or stayed silent for `hedge_after`; the first answer wins and the calls
/// still running are dropped, which cancels them. Returns the index of the member that
/// answered, so the caller can ask it first next time.
pub(crate) async fn first_success<'a, T, F, Fut>(
    clients: &'a [Arc<MemberClient>],
    hedge_after: Duration,
    call: F,
) -> Result<(usize, T), ProbeError>
where
    F: Fn(&'a MemberClient) -> Fut,
    Fut: Future<Output = Result<T, ProbeError>> + 'a,
{
    let ask = |index: usize| {
        let client = &clients[index];
        let call = &call;
        async move { (index, call(client).await) }
    };
    let mut running = FuturesUnordered::new();
    let mut next = 0;
    let mut failures: Vec<(usize, ProbeError)> = Vec::new();
    loop {
        if running.is_empty() {
            if next == clients.len() {
                return Err(combine(clients, failures));
            }
            running.push(ask(next));
            next += 1;
        }
        let more_to_ask = next < clients.len();
        tokio::select! {
            Some((index, result)) = running.next() => match result {
                Ok(value) => return Ok((index, value)),
                Err(err) => failures.push((index, err)),
            },
            _ = tokio::time::sleep(hedge_after), if more_to_ask => {
                running.push(ask(next));
                next += 1;
            }
        }
    }
}

fn combine(clients: &[Arc<MemberClient>], mut failures: Vec<(usize, ProbeError)>) -> ProbeError {
    match failures.len() {
        0 => ProbeError::Unreachable("no endpoint to ask".into()),
        1 => failures.remove(0).1,
        _ => {
            failures.sort_by_key(|(index, _)| *index);
            let details = failures
                .iter()
                .map(|(index, err)| format!("{}: {err}", clients[*index].endpoint()))
                .collect::<Vec<_>>()
                .join("; ");
            let message = format!("no member answered ({details})");
            match failures[0].1 {
                ProbeError::Timeout(after) => ProbeError::Timeout(after),
                ProbeError::Auth(_) => ProbeError::Auth(message),
                ProbeError::Rpc(_) => ProbeError::Rpc(message),
                ProbeError::Unreachable(_) => ProbeError::Unreachable(message),
            }
        }
    }
}
