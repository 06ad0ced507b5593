//! The Alertmanager configuration prometheus-operator generates from an AlertmanagerConfig
//! (its default matcher strategy, `OnNamespace`), merged into a root configuration.

use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};

use super::unsupported;

const SPEC_FIELDS: &[&str] = &["route", "receivers", "inhibitRules"];
const ROUTE_FIELDS: &[&str] = &[
    "receiver",
    "matchers",
    "groupBy",
    "groupWait",
    "groupInterval",
    "repeatInterval",
    "continue",
    "routes",
];
const INHIBIT_FIELDS: &[&str] = &["sourceMatch", "targetMatch", "equal"];
const RECEIVER_FIELDS: &[&str] = &["name", "webhookConfigs"];
const WEBHOOK_FIELDS: &[&str] = &["url", "sendResolved", "httpConfig"];

/// Where the webhooks of an AlertmanagerConfig really go: the in-cluster URL it names is
/// replaced by `url`, and the Secret holding the bearer token by a file.
pub struct Webhook<'a> {
    pub url: &'a str,
    pub credentials_file: &'a str,
}

/// `name="value"`, `name=~"value"`...: the operator's `Matcher.String()`.
fn matcher(entry: &Value) -> Result<String> {
    let name = entry["name"].as_str().context("matcher name")?;
    let value = entry["value"].as_str().unwrap_or_default();
    let kind = match (entry["matchType"].as_str(), entry["regex"].as_bool()) {
        (Some(kind), _) => kind,
        (None, Some(true)) => "=~",
        (None, _) => "=",
    };
    Ok(format!(
        "{name}{kind}\"{}\"",
        value.replace('\\', "\\\\").replace('"', "\\\"")
    ))
}

fn matchers(entries: &Value) -> Result<Vec<String>> {
    entries
        .as_array()
        .into_iter()
        .flatten()
        .map(matcher)
        .collect()
}

fn route(input: &Value, prefix: &str) -> Result<Value> {
    let fields = input.as_object().context("a route is not a mapping")?;
    unsupported(fields, ROUTE_FIELDS, "an AlertmanagerConfig route")?;
    let mut out = Map::new();
    if let Some(receiver) = input["receiver"].as_str() {
        out.insert("receiver".into(), format!("{prefix}/{receiver}").into());
    }
    let matchers = matchers(&input["matchers"])?;
    if !matchers.is_empty() {
        out.insert("matchers".into(), json!(matchers));
    }
    for (from, to) in [
        ("groupBy", "group_by"),
        ("groupWait", "group_wait"),
        ("groupInterval", "group_interval"),
        ("repeatInterval", "repeat_interval"),
        ("continue", "continue"),
    ] {
        if let Some(value) = input.get(from) {
            out.insert(to.into(), value.clone());
        }
    }
    if let Some(children) = input["routes"].as_array() {
        let children: Vec<Value> = children
            .iter()
            .map(|c| route(c, prefix))
            .collect::<Result<_>>()?;
        out.insert("routes".into(), Value::Array(children));
    }
    Ok(Value::Object(out))
}

fn receiver(input: &Value, prefix: &str, webhook: &Webhook<'_>) -> Result<Value> {
    let fields = input.as_object().context("a receiver is not a mapping")?;
    unsupported(fields, RECEIVER_FIELDS, "an AlertmanagerConfig receiver")?;
    let name = input["name"].as_str().context("receiver name")?;
    let mut configs = Vec::new();
    for config in input["webhookConfigs"].as_array().into_iter().flatten() {
        let fields = config
            .as_object()
            .context("a webhook config is not a mapping")?;
        unsupported(fields, WEBHOOK_FIELDS, "an AlertmanagerConfig webhook")?;
        let authorization = &config["httpConfig"]["authorization"];
        if config["httpConfig"]
            .as_object()
            .is_some_and(|h| h.keys().any(|k| k != "authorization"))
        {
            bail!("webhook httpConfig beyond authorization is not reproduced");
        }
        let mut out = json!({
            "url": webhook.url,
            "send_resolved": config["sendResolved"].as_bool().unwrap_or(true),
        });
        if authorization.is_object() {
            out["http_config"] = json!({"authorization": {
                "type": authorization["type"].as_str().unwrap_or("Bearer"),
                "credentials_file": webhook.credentials_file,
            }});
        }
        configs.push(out);
    }
    Ok(json!({"name": format!("{prefix}/{name}"), "webhook_configs": configs}))
}

/// Merges the AlertmanagerConfig `resource` into the Alertmanager configuration `root` as
/// the operator does: its route first among the root route's children, with `continue: true`
/// and a `namespace` matcher; its receivers; its inhibit rules with a `namespace` matcher on
/// both sides.
pub fn merge(root: &mut Value, resource: &Value, webhook: &Webhook<'_>) -> Result<()> {
    let namespace = resource["metadata"]["namespace"]
        .as_str()
        .context("AlertmanagerConfig namespace")?;
    let name = resource["metadata"]["name"]
        .as_str()
        .context("AlertmanagerConfig name")?;
    let spec = resource["spec"]
        .as_object()
        .context("AlertmanagerConfig spec")?;
    unsupported(spec, SPEC_FIELDS, &format!("AlertmanagerConfig {name}"))?;
    let prefix = format!("{namespace}/{name}");
    let scope = format!("namespace=\"{namespace}\"");

    let mut inhibit_rules = Vec::new();
    for rule in resource["spec"]["inhibitRules"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let fields = rule
            .as_object()
            .context("an inhibit rule is not a mapping")?;
        unsupported(fields, INHIBIT_FIELDS, "an AlertmanagerConfig inhibit rule")?;
        let mut source = matchers(&rule["sourceMatch"])?;
        let mut target = matchers(&rule["targetMatch"])?;
        for side in [&mut source, &mut target] {
            if !side.contains(&scope) {
                side.push(scope.clone());
            }
        }
        let mut out = json!({"source_matchers": source, "target_matchers": target});
        if let Some(equal) = rule.get("equal") {
            out["equal"] = equal.clone();
        }
        inhibit_rules.push(out);
    }
    let rules = root
        .as_object_mut()
        .context("root config")?
        .entry("inhibit_rules")
        .or_insert_with(|| json!([]));
    rules
        .as_array_mut()
        .context("inhibit_rules")?
        .extend(inhibit_rules);

    for input in resource["spec"]["receivers"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let converted = receiver(input, &prefix, webhook)?;
        root["receivers"]
            .as_array_mut()
            .context("root receivers")?
            .push(converted);
    }

    if let Some(input) = resource["spec"].get("route") {
        let mut top = route(input, &prefix)?;
        let list = top
            .as_object_mut()
            .context("route")?
            .entry("matchers")
            .or_insert_with(|| json!([]));
        list.as_array_mut().context("matchers")?.push(scope.into());
        top["continue"] = true.into();
        let routes = root["route"]
            .as_object_mut()
            .context("root route")?
            .entry("routes")
            .or_insert_with(|| json!([]));
        routes.as_array_mut().context("root routes")?.insert(0, top);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_inhibitions_are_scoped_to_the_resources_namespace() {
        let mut root = json!({"route": {"receiver": "null", "routes": [{"receiver": "null"}]},
                              "receivers": [{"name": "null"}]});
        let resource = json!({
            "metadata": {"name": "amc", "namespace": "ns"},
            "spec": {
                "route": {"receiver": "hook", "matchers": [{"name": "alertname", "matchType": "=~", "value": "A|B"}]},
                "receivers": [{"name": "hook", "webhookConfigs": [{"url": "http://x", "httpConfig": {"authorization": {"credentials": {"name": "s", "key": "k"}}}}]}],
                "inhibitRules": [{"sourceMatch": [{"name": "alertname", "value": "A"}],
                                  "targetMatch": [{"name": "alertname", "value": "B"}], "equal": ["c"]}]
            }
        });
        let webhook = Webhook {
            url: "http://127.0.0.1:1/hook",
            credentials_file: "/token",
        };
        merge(&mut root, &resource, &webhook).expect("a supported resource");
        assert_eq!(
            root["route"]["routes"][0],
            json!({"receiver": "ns/amc/hook", "matchers": ["alertname=~\"A|B\"", "namespace=\"ns\""], "continue": true})
        );
        assert_eq!(root["route"]["routes"][1]["receiver"], "null");
        assert_eq!(
            root["inhibit_rules"][0],
            json!({"source_matchers": ["alertname=\"A\"", "namespace=\"ns\""],
                   "target_matchers": ["alertname=\"B\"", "namespace=\"ns\""], "equal": ["c"]})
        );
        assert_eq!(root["receivers"][1]["name"], "ns/amc/hook");
        assert_eq!(
            root["receivers"][1]["webhook_configs"][0]["http_config"]["authorization"]
                ["credentials_file"],
            "/token"
        );
    }
}
