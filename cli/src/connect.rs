//! How the CLI finds and logs in to a stack: flags, environment, or the state file `up` leaves
//! in the data dir.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use serde::{Deserialize, Serialize};
use switchyard::config::NatsArgs;

/// The file `switchyard up` writes into the data dir while the stack runs.
pub const STATE_FILE: &str = "switchyard.json";
/// The user the CLI logs in as on a stack running nats.conf.
pub const OPS_USER: &str = "ops";

/// Where a running stack is, as `up` records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// NATS client URL.
    pub nats_url: String,
    /// NATS monitoring URL.
    pub monitor_url: String,
    /// order-service's HTTP API.
    pub http_url: String,
    /// The data dir.
    pub data_dir: PathBuf,
    /// The user the CLI logs in as.
    pub nats_user: String,
    /// The process id of `switchyard up`.
    pub pid: u32,
}

impl State {
    /// Reads the state file in `data_dir`, if a stack left one.
    pub fn read(data_dir: &Path) -> Option<State> {
        let text = std::fs::read_to_string(data_dir.join(STATE_FILE)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Writes the state file.
    pub fn write(&self) -> anyhow::Result<()> {
        let path = self.data_dir.join(STATE_FILE);
        std::fs::write(&path, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("failed to write {}", path.display()))
    }
}

/// How to reach a running stack (every flag falls back to the state `up` left in --data-dir).
#[derive(Debug, Clone, Args)]
pub struct StackArgs {
    /// NATS server URL; default the one `switchyard up` recorded in --data-dir, else nats://127.0.0.1:4222.
    #[arg(long, env = "NATS_URL", global = true)]
    pub nats_url: Option<String>,

    /// NATS user; default `ops` (the operator user of nats.conf), unless --nats-creds is given.
    #[arg(long, env = "NATS_USER", global = true)]
    pub nats_user: Option<String>,

    /// NATS password; default $OPS_PASSWORD or its development default for the `ops` user.
    #[arg(long, env = "NATS_PASSWORD", hide_env_values = true, global = true)]
    pub nats_password: Option<String>,

    /// NATS credentials file, instead of user and password.
    #[arg(long, env = "NATS_CREDS", global = true)]
    pub nats_creds: Option<PathBuf>,

    /// Prefix of the CLI's reply subjects; default `_INBOX_<user>` (`_INBOX_ops`), the only one
    /// nats.conf lets that user subscribe to.
    #[arg(long, env = "NATS_INBOX_PREFIX", global = true)]
    pub nats_inbox_prefix: Option<String>,

    /// Data dir of a stack started by `switchyard up` (where its state file is).
    #[arg(long, env = "DATA_DIR", default_value = "./data", global = true)]
    pub data_dir: PathBuf,
}

/// The development default of each password nats.conf reads from the environment.
pub const DEV_PASSWORDS: [(&str, &str); 8] = [
    ("INVENTORY_PASSWORD", "dev-inventory"),
    ("ORDERS_PASSWORD", "dev-orders"),
    ("EMAIL_PASSWORD", "dev-email"),
    ("AUDIT_PASSWORD", "dev-audit"),
    ("OPS_PASSWORD", "dev-ops"),
    ("SYS_PASSWORD", "dev-sys"),
    ("PARTNER_PASSWORD", "dev-partner"),
    ("LOYALTY_PASSWORD", "dev-loyalty"),
];

/// The password for `variable`: the environment's, or the development default.
pub fn password(variable: &str) -> String {
    std::env::var(variable).unwrap_or_else(|_| {
        DEV_PASSWORDS.iter().find(|(v, _)| *v == variable).map(|(_, p)| p.to_string()).unwrap_or_default()
    })
}

impl StackArgs {
    /// The state of a stack started by `up` in --data-dir, if any.
    pub fn state(&self) -> Option<State> {
        State::read(&self.data_dir)
    }

    /// The NATS connection flags to use.
    pub fn nats(&self) -> NatsArgs {
        let state = self.state();
        let nats_url = self
            .nats_url
            .clone()
            .or_else(|| state.as_ref().map(|s| s.nats_url.clone()))
            .unwrap_or_else(|| "nats://127.0.0.1:4222".into());
        // The CLI is the operator's tool: it logs in as `ops` unless told otherwise, also on a
        // hand-given --nats-url (a server without authorization ignores the credentials).
        let nats_user = self
            .nats_user
            .clone()
            .or_else(|| state.as_ref().map(|s| s.nats_user.clone()))
            .or_else(|| Some(OPS_USER.to_string()));
        let nats_password = match (&self.nats_password, &nats_user) {
            (Some(password), _) => Some(password.clone()),
            (None, Some(user)) if user == OPS_USER => Some(password("OPS_PASSWORD")),
            _ => None,
        };
        let (nats_user, nats_password) =
            if self.nats_creds.is_some() { (None, None) } else { (nats_user, nats_password) };
        NatsArgs {
            nats_url,
            nats_user,
            nats_password,
            nats_creds: self.nats_creds.clone(),
            nats_inbox_prefix: self.nats_inbox_prefix.clone(),
        }
    }

    /// order-service's HTTP URL: `flag`, else the state's, else the default.
    pub fn http_url(&self, flag: Option<&str>) -> String {
        flag.map(str::to_string)
            .or_else(|| self.state().map(|s| s.http_url))
            .unwrap_or_else(|| "http://127.0.0.1:8080".into())
    }

    /// Where the stack is said to be, for messages: the URL, and how it was found.
    pub fn origin(&self) -> String {
        let url = switchyard::nats::redact_urls(&self.nats().nats_url);
        let state_file = self.data_dir.join(STATE_FILE);
        if self.nats_url.is_some() {
            url
        } else if self.state().is_some() {
            format!("{url} (recorded by switchyard up in {})", state_file.display())
        } else {
            format!("{url} (the default: no {} says where a stack runs)", state_file.display())
        }
    }

    /// Connects to NATS; an authorization failure says which user was refused and what to pass.
    pub async fn connect(&self, purpose: &str) -> anyhow::Result<async_nats::Client> {
        let nats = self.nats();
        match switchyard::nats::connect(&nats, "switchyard", purpose).await {
            Ok(client) => Ok(client),
            Err(switchyard::nats::ConnectError::Connect { source, .. })
                if source.kind() == async_nats::ConnectErrorKind::AuthorizationViolation =>
            {
                let who = match (&nats.nats_creds, &nats.nats_user) {
                    (Some(creds), _) => format!("the credentials in {}", creds.display()),
                    (None, Some(user)) => format!("user {user}"),
                    (None, None) => "an anonymous client".to_string(),
                };
                anyhow::bail!(
                    "authorization failed at {}: the server refused {who}. Pass --nats-user and \
                     --nats-password (or --nats-creds); on a stack started by `switchyard up` the \
                     user is ops with $OPS_PASSWORD (default dev-ops)",
                    self.origin()
                )
            }
            Err(err) => Err(err).with_context(|| format!("failed to connect to nats at {}", self.origin())),
        }
    }

    /// Fails when the server at hand runs no Switchyard stack: no micro service answered and
    /// there is no `ORDERS` stream.
    pub fn no_stack_error(&self) -> anyhow::Error {
        anyhow::anyhow!(
            "no Switchyard stack at {}: no micro service answered $SRV.PING and there is no {} \
             stream. Start one with `switchyard up`, or point at one with --data-dir (of a running \
             `switchyard up`) or --nats-url",
            self.origin(),
            contracts::names::ORDERS_STREAM
        )
    }
}
