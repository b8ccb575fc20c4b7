//! `alerting`: the command line. It parses arguments and calls the library
//! (or, for incident commands, the running service's HTTP API).

use std::path::PathBuf;

use alerting::{
    export,
    server::{self, ServeArgs, Server},
};
use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

/// Evaluates SLIs, pages the on-call roster with runbook links, escalates,
/// and keeps incidents.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the alert engine, the pager and the API.
    Serve(Box<ServeArgs>),
    /// Load the rule and roster files and report problems (exit 1 on errors).
    Check {
        /// Rule file (YAML). Default: the shipped rules.
        #[arg(long, env = "ALERTING_RULES")]
        rules: Option<PathBuf>,
        /// Roster file (YAML). Default: the shipped example roster.
        #[arg(long, env = "ALERTING_ROSTER")]
        roster: Option<PathBuf>,
    },
    /// Write configuration for other systems from the same rules.
    Export {
        #[command(subcommand)]
        target: ExportTarget,
    },
    /// Who is on call.
    Oncall {
        #[command(subcommand)]
        command: OncallCommand,
    },
    /// List or show incidents.
    Incidents {
        #[command(subcommand)]
        command: IncidentCommand,
    },
    /// Acknowledge an incident: stops its escalation.
    Ack {
        /// The incident's number (`#7` on the page).
        id: i64,
        /// Who acknowledges, for the timeline.
        #[arg(long, env = "USER", default_value = "cli")]
        by: String,
        #[command(flatten)]
        api: Api,
    },
    /// Resolve an incident; whoever was paged is told.
    Resolve {
        /// The incident's number.
        id: i64,
        /// Who resolves, for the timeline.
        #[arg(long, env = "USER", default_value = "cli")]
        by: String,
        #[command(flatten)]
        api: Api,
    },
    /// Add a note to an incident's timeline.
    Note {
        /// The incident's number.
        id: i64,
        /// What to write on its timeline.
        text: String,
        /// Who writes it.
        #[arg(long, env = "USER", default_value = "cli")]
        by: String,
        #[command(flatten)]
        api: Api,
    },
    /// Silences and maintenance windows.
    Silence {
        #[command(subcommand)]
        command: SilenceCommand,
    },
    /// API keys for ALERTING_KEYS_FILE.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Make a random key: its keys-file entry goes to stdout (append it:
    /// `alerting keys new --name kim --role responder >> keys.yaml`), the
    /// key itself to stderr, once. The file holds only the key's SHA-256.
    New {
        /// The name the timeline shows for changes made with this key.
        #[arg(long)]
        name: String,
        /// read (GET routes) or responder (changes too).
        #[arg(long)]
        role: alerting::auth::Role,
    },
}

#[derive(Subcommand)]
enum ExportTarget {
    /// Prometheus alerting rules and an Alertmanager config.
    Prometheus {
        /// Rule file (YAML). Default: the shipped rules.
        #[arg(long, env = "ALERTING_RULES")]
        rules: Option<PathBuf>,
        /// Directory to write `alerts.rules.yml` and `alertmanager.yml` into.
        #[arg(long, default_value = "prometheus-export")]
        out: PathBuf,
        /// Base of the `runbook_url` annotations, as for `serve`. Default:
        /// the rule file's, else this checkout's `runbooks/` folder.
        #[arg(long, env = "RUNBOOK_BASE_URL")]
        runbook_base_url: Option<String>,
        /// Grafana, for the `dashboard` annotations. Default: the rule
        /// file's; with neither, none.
        #[arg(long, env = "GRAFANA_URL")]
        grafana_url: Option<String>,
        #[command(flatten)]
        options: export::AlertmanagerOptions,
    },
}

#[derive(Subcommand)]
enum OncallCommand {
    /// Who would be paged, step by step, for an alert at a given time.
    Who {
        /// When the first page goes out (RFC 3339); default now.
        #[arg(long)]
        at: Option<DateTime<Utc>>,
        /// A rule id: its owner role decides who a warning pages.
        #[arg(long)]
        rule: Option<String>,
        /// warning (the owner's on-call first) or critical (every role at
        /// once). Default: critical with --rule, warning without.
        #[arg(long)]
        severity: Option<alerting::rules::Severity>,
        /// Owner role, when no rule is given. Default: incident-lead.
        #[arg(long)]
        owner: Option<String>,
        /// Rule file (YAML). Default: the shipped rules.
        #[arg(long, env = "ALERTING_RULES")]
        rules: Option<PathBuf>,
        /// Roster file (YAML). Default: the shipped example roster.
        #[arg(long, env = "ALERTING_ROSTER")]
        roster: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum IncidentCommand {
    /// Incidents in a state, newest first.
    List {
        /// open (firing or acked), firing, acked, resolved or all.
        #[arg(long, default_value = "open")]
        state: String,
        #[command(flatten)]
        api: Api,
    },
    /// One incident and its timeline.
    Show {
        /// The incident's number.
        id: i64,
        #[command(flatten)]
        api: Api,
    },
}

#[derive(Subcommand)]
enum SilenceCommand {
    /// Silence pages whose labels match (`--match rule_id=high-error-rate`).
    Add {
        /// `label=value`, repeatable; an alert must carry every one. Labels:
        /// rule_id, alertname, severity, owner and the alert's own.
        #[arg(long = "match", required = true, value_parser = parse_matcher)]
        matchers: Vec<(String, String)>,
        /// How long (`2h`), from `--starts-at` or now.
        #[arg(long = "for")]
        duration: String,
        /// When it starts (RFC 3339, within a year): a planned
        /// maintenance window. Default: now.
        #[arg(long)]
        starts_at: Option<DateTime<Utc>>,
        /// A maintenance window rather than an ad-hoc silence.
        #[arg(long)]
        maintenance: bool,
        /// Add it anyway: needed when no matcher is `rule_id` or
        /// `alertname` (such a silence mutes every alert whose labels
        /// match), or when no rule's alerts could match (a typo, say).
        #[arg(long)]
        force: bool,
        /// Why, for whoever wonders later why they were not paged.
        #[arg(long)]
        comment: String,
        /// Who adds it.
        #[arg(long, env = "USER", default_value = "cli")]
        by: String,
        #[command(flatten)]
        api: Api,
    },
    /// Silences that have not ended.
    List {
        #[command(flatten)]
        api: Api,
    },
    /// End a silence now.
    Expire {
        /// The silence's number.
        id: i64,
        #[command(flatten)]
        api: Api,
    },
}

#[derive(clap::Args)]
struct Api {
    /// The alerting service's URL.
    #[arg(long, env = "ALERTING_URL", default_value = "http://127.0.0.1:9095")]
    url: String,
    /// Sent as `Authorization: Bearer`: a responder key, or a read key for
    /// the commands that only read.
    #[arg(long, env = "ALERTING_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Print the raw JSON.
    #[arg(long)]
    json: bool,
}

fn parse_matcher(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("{s:?} is not label=value"))?;
    if k.is_empty() {
        return Err(format!("{s:?} has no label name"));
    }
    Ok((k.to_owned(), v.to_owned()))
}

impl Api {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(10)).build()?;
        let mut req = client.request(method, format!("{}{path}", self.url.trim_end_matches('/')));
        if let Some(key) = &self.api_key {
            req = req.bearer_auth(key);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let response =
            req.send().await.with_context(|| format!("cannot reach the alerting service at {}", self.url))?;
        let status = response.status();
        let body: Value = if status == reqwest::StatusCode::NO_CONTENT {
            Value::Null
        } else {
            response.json().await.unwrap_or(Value::Null)
        };
        if !status.is_success() {
            let message = body["error"]["message"].as_str().unwrap_or("request failed");
            bail!("{message} (HTTP {status})");
        }
        Ok(body)
    }

    fn print(&self, value: &Value, human: impl FnOnce(&Value)) {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
        } else {
            human(value);
        }
    }
}

fn ms(value: &Value) -> String {
    value.as_i64().and_then(DateTime::from_timestamp_millis).map_or_else(|| "-".into(), |t| t.to_rfc3339())
}

fn print_incident_line(i: &Value) {
    println!(
        "#{:<5} {:<9} {:<8} {:<28} since {}",
        i["id"],
        i["state"].as_str().unwrap_or(""),
        i["severity"].as_str().unwrap_or(""),
        i["alert"].as_str().unwrap_or(""),
        ms(&i["started_at"])
    );
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // A failpoint the hook did not see (it exits first).
            if let Some(server::RunError::Failpoint(point)) = e.downcast_ref::<server::RunError>() {
                exit_at_failpoint(*point);
            }
            eprintln!("error: {}", serving::error_chain(e.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}

/// A test's failpoint: stop now, as if killed there, with the point's
/// status; no other task of the process runs again.
fn exit_at_failpoint(point: alerting::service::Failpoint) {
    telemetry::flush_logs();
    eprintln!("failpoint {point}: exiting with {}", point.exit_code());
    std::process::exit(point.exit_code().into());
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let telemetry = telemetry::init(&telemetry::TelemetryConfig::from_env(alerting::SERVICE))
                .context("starting telemetry")?;
            let server = Server::build(*args).await?;
            server.on_failpoint(exit_at_failpoint);
            server.run(serving::shutdown_signal()).await?;
            telemetry.shutdown();
        }
        Command::Check { rules, roster } => {
            let (set, roster) = server::load_config(rules.as_deref(), roster.as_deref())?;
            for w in &set.warnings {
                println!("warning: {w}");
            }
            println!("{} rules, {} roles, {} people: OK", set.rules.len(), roster.roles().len(), roster.people().len());
        }
        Command::Export { target: ExportTarget::Prometheus { rules, out, runbook_base_url, grafana_url, options } } => {
            let (set, _) = server::load_config(rules.as_deref(), None)?;
            let set = set.with_links(runbook_base_url, grafana_url).map_err(anyhow::Error::msg)?;
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            std::fs::write(out.join("alerts.rules.yml"), export::prometheus_rules(&set))?;
            std::fs::write(out.join("alertmanager.yml"), export::alertmanager_config(&set, &options))?;
            println!("wrote {0}/alerts.rules.yml and {0}/alertmanager.yml", out.display());
        }
        Command::Oncall { command: OncallCommand::Who { at, rule, severity, owner, rules, roster } } => {
            let (set, roster) = server::load_config(rules.as_deref(), roster.as_deref())?;
            let assumed_at = at.is_none();
            let at = at.unwrap_or_else(Utc::now);
            let assumed_severity = severity.is_none();
            let assumed_owner = rule.is_none() && owner.is_none();
            let (severity, owner) = match &rule {
                Some(id) => {
                    let r = set.rules.iter().find(|r| &r.id == id).with_context(|| {
                        format!(
                            "no rule {id:?}; the rules are {}",
                            set.rules.iter().map(|r| r.id.as_str()).collect::<Vec<_>>().join(", ")
                        )
                    })?;
                    (severity.unwrap_or(alerting::rules::Severity::Critical), r.owner.clone())
                }
                None => (
                    severity.unwrap_or(alerting::rules::Severity::Warning),
                    owner.unwrap_or_else(|| "incident-lead".into()),
                ),
            };
            if roster.role(&owner).is_none() {
                bail!("no role {owner:?} in the roster");
            }
            // What was assumed, so the table can be checked against a drill.
            let default = |assumed: bool, how: &str| if assumed { format!(" (assumed; {how})") } else { String::new() };
            let what = match &rule {
                Some(id) => format!("rule {id}, owner {owner}"),
                None => format!("no rule, owner {owner}{}", default(assumed_owner, "--rule or --owner to change")),
            };
            println!("assuming {what}");
            println!("         severity {severity}{}", default(assumed_severity, "--severity to change"));
            println!(
                "         first page at {}{}",
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                default(assumed_at, "now; --at to change")
            );
            println!("unacknowledged, each level is paged this long after the first page:");
            let who = alerting::http::who(&roster, severity, &owner, at);
            for step in who["steps"].as_array().into_iter().flatten() {
                let people: Vec<String> = step["people"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| format!("{} ({})", p["name"].as_str().unwrap_or(""), p["role"].as_str().unwrap_or("")))
                    .collect();
                println!(
                    "+{:>3} min  level {}  {}",
                    step["after_minutes"].as_i64().unwrap_or_default(),
                    step["level"],
                    people.join(", ")
                );
            }
        }
        Command::Incidents { command: IncidentCommand::List { state, api } } => {
            let v = api.call(reqwest::Method::GET, &format!("/v1/incidents?state={state}"), None).await?;
            api.print(&v, |v| {
                let incidents = v["incidents"].as_array().cloned().unwrap_or_default();
                if incidents.is_empty() {
                    println!("no incidents ({state})");
                }
                incidents.iter().for_each(print_incident_line);
            });
        }
        Command::Incidents { command: IncidentCommand::Show { id, api } } => {
            let v = api.call(reqwest::Method::GET, &format!("/v1/incidents/{id}"), None).await?;
            api.print(&v, |v| {
                print_incident_line(&v["incident"]);
                println!("  {}", v["incident"]["summary"].as_str().unwrap_or(""));
                for e in v["timeline"].as_array().into_iter().flatten() {
                    println!(
                        "  {}  {:<16} {}",
                        ms(&e["at"]),
                        e["kind"].as_str().unwrap_or(""),
                        e["text"].as_str().unwrap_or("")
                    );
                }
            });
        }
        Command::Ack { id, by, api } => {
            let v =
                api.call(reqwest::Method::POST, &format!("/v1/incidents/{id}/ack"), Some(json!({ "by": by }))).await?;
            api.print(&v, |v| println!("incident #{id} {}", v["incident"]["state"].as_str().unwrap_or("")));
        }
        Command::Resolve { id, by, api } => {
            let v = api
                .call(reqwest::Method::POST, &format!("/v1/incidents/{id}/resolve"), Some(json!({ "by": by })))
                .await?;
            api.print(&v, |v| println!("incident #{id} {}", v["incident"]["state"].as_str().unwrap_or("")));
        }
        Command::Note { id, text, by, api } => {
            let v = api
                .call(
                    reqwest::Method::POST,
                    &format!("/v1/incidents/{id}/notes"),
                    Some(json!({ "text": text, "by": by })),
                )
                .await?;
            api.print(&v, |_| println!("noted on incident #{id}"));
        }
        Command::Silence { command } => match command {
            SilenceCommand::Add { matchers, duration, starts_at, maintenance, force, comment, by, api } => {
                let body = json!({
                    "matchers": matchers.into_iter().collect::<std::collections::BTreeMap<_, _>>(),
                    "duration": duration,
                    "starts_at": starts_at,
                    "kind": if maintenance { "maintenance" } else { "silence" },
                    "comment": comment,
                    "created_by": by,
                    "force": force,
                });
                let v = api.call(reqwest::Method::POST, "/v1/silences", Some(body)).await?;
                api.print(&v, |v| {
                    println!("silence #{} until {}", v["silence"]["id"], ms(&v["silence"]["ends_at"]));
                    let matches = v["matches"].as_array().cloned().unwrap_or_default();
                    if matches.is_empty() {
                        println!("it mutes no alert pending or firing now");
                    } else {
                        println!("it mutes {} alert(s) pending or firing now:", matches.len());
                    }
                    for a in &matches {
                        println!(
                            "  {:<8} {:<8} {} {}",
                            a["phase"].as_str().unwrap_or(""),
                            a["severity"].as_str().unwrap_or("-"),
                            a["key"]["rule_id"].as_str().unwrap_or(""),
                            a["key"]["labels"]
                        );
                    }
                });
            }
            SilenceCommand::List { api } => {
                let v = api.call(reqwest::Method::GET, "/v1/silences", None).await?;
                api.print(&v, |v| {
                    if v["silences"].as_array().is_none_or(Vec::is_empty) {
                        println!("no silences (none active or scheduled)");
                    }
                    for s in v["silences"].as_array().into_iter().flatten() {
                        println!(
                            "#{:<4} {:<11} {} .. {}  {}  {}",
                            s["id"],
                            s["kind"].as_str().unwrap_or(""),
                            ms(&s["starts_at"]),
                            ms(&s["ends_at"]),
                            s["matchers"],
                            s["comment"].as_str().unwrap_or("")
                        );
                    }
                });
            }
            SilenceCommand::Expire { id, api } => {
                api.call(reqwest::Method::DELETE, &format!("/v1/silences/{id}"), None).await?;
                println!("silence #{id} expired");
            }
        },
        Command::Keys { command: KeysCommand::New { name, role } } => {
            let made = alerting::auth::new_key(&name, role).map_err(anyhow::Error::msg)?;
            print!("{}", made.entry);
            eprintln!("# {name}'s key ({}), shown only now; the keys file holds only its SHA-256:", role.as_str());
            eprintln!("{}", made.key);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn every_command_flag_and_argument_has_help() {
        assert_eq!(testkit::undocumented(&super::Cli::command()), Vec::<String>::new());
    }
}
