//! The demo's environment contract, the same as the sample image's.

use anyhow::{Context, Result, bail};

/// Whether the workload sends or receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Producer,
    Consumer,
}

/// Settings read from the environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// `OPERATION_MODE`: `producer` or `consumer`.
    pub mode: Mode,
    /// `MESSAGE_COUNT`: messages the producer sends (default 100), and the most the
    /// consumer receives; the consumer also stops once the queue stays empty.
    pub message_count: usize,
    /// `AZURE_SERVICEBUS_QUEUE_NAME`.
    pub queue: String,
    /// `AZURE_SERVICEBUS_HOSTNAME`, such as `mysbns.servicebus.windows.net`: the TLS server
    /// name, the AMQP open host name and the host of the CBS audience.
    pub hostname: String,
    /// `AZURE_SERVICEBUS_ENDPOINT`, such as `amqps://127.0.0.1:5671`: where the TCP
    /// connection goes. `amqps` starts TLS, `amqp` does not. Defaults to
    /// `amqps://{hostname}:5671`.
    pub endpoint: Endpoint,
    /// `FEDERATED_TOKEN_READS`: `each-request` (default) uses `WorkloadIdentityCredential`;
    /// `once` keeps the first assertion read from the token file, as `azure_identity` 0.20
    /// did, and asks for a second token with it after the kubelet rotates the file;
    /// `again-after-rotation` asks for the second token with the rotated file's contents.
    pub token_reads: TokenReads,
    /// `SERVICEBUS_CONNECTION_STRING`: when set, the demo authorizes with a shared access
    /// signature signed with its key instead of an Entra token.
    pub connection_string: Option<String>,
}

/// How the demo reads the federated token file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenReads {
    EachRequest,
    Once,
    AgainAfterRotation,
}

/// Where to dial and whether to start TLS there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub tls: bool,
    /// `host:port` to connect to.
    pub address: String,
}

const DEFAULT_MESSAGE_COUNT: usize = 100;

impl Config {
    /// Reads the settings, naming the variable that is missing or invalid.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let required = |name: &str| {
            lookup(name).with_context(|| format!("environment variable {name} is missing or empty"))
        };
        let mode = match required("OPERATION_MODE")?.to_ascii_lowercase().as_str() {
            "producer" => Mode::Producer,
            "consumer" => Mode::Consumer,
            other => bail!("OPERATION_MODE is '{other}'; set it to 'producer' or 'consumer'"),
        };
        let message_count = match lookup("MESSAGE_COUNT") {
            Some(text) => text
                .parse()
                .with_context(|| format!("MESSAGE_COUNT is '{text}'; set it to a whole number"))?,
            None => DEFAULT_MESSAGE_COUNT,
        };
        let hostname = required("AZURE_SERVICEBUS_HOSTNAME")?;
        let endpoint = match lookup("AZURE_SERVICEBUS_ENDPOINT") {
            Some(url) => Endpoint::parse(&url)?,
            None => Endpoint {
                tls: true,
                address: format!("{hostname}:5671"),
            },
        };
        let token_reads = match lookup("FEDERATED_TOKEN_READS").as_deref() {
            None | Some("each-request") => TokenReads::EachRequest,
            Some("once") => TokenReads::Once,
            Some("again-after-rotation") => TokenReads::AgainAfterRotation,
            Some(other) => bail!(
                "FEDERATED_TOKEN_READS is '{other}'; set it to 'each-request', 'once' or 'again-after-rotation'"
            ),
        };
        Ok(Self {
            mode,
            message_count,
            queue: required("AZURE_SERVICEBUS_QUEUE_NAME")?,
            hostname,
            endpoint,
            token_reads,
            connection_string: lookup("SERVICEBUS_CONNECTION_STRING"),
        })
    }
}

impl Endpoint {
    /// Parses `amqps://host[:port]` (port 5671 by default) or `amqp://host[:port]` (5672).
    pub fn parse(url: &str) -> Result<Self> {
        let (tls, rest, default_port) = if let Some(rest) = url.strip_prefix("amqps://") {
            (true, rest, 5671)
        } else if let Some(rest) = url.strip_prefix("amqp://") {
            (false, rest, 5672)
        } else {
            bail!(
                "AZURE_SERVICEBUS_ENDPOINT is '{url}'; expected amqps://host:port or amqp://host:port"
            );
        };
        let authority = rest.trim_end_matches('/');
        let has_port = authority
            .rsplit_once(':')
            .is_some_and(|(_, port)| port.parse::<u16>().is_ok());
        let address = if has_port {
            authority.to_owned()
        } else {
            format!("{authority}:{default_port}")
        };
        Ok(Self { tls, address })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<Config> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn endpoint_override_keeps_namespace_host() {
        let config = config(&[
            ("OPERATION_MODE", "producer"),
            ("AZURE_SERVICEBUS_QUEUE_NAME", "myqueue"),
            ("AZURE_SERVICEBUS_HOSTNAME", "mysbns.servicebus.windows.net"),
            ("AZURE_SERVICEBUS_ENDPOINT", "amqps://127.0.0.1:45671"),
        ])
        .unwrap();
        assert_eq!(
            config.endpoint,
            Endpoint {
                tls: true,
                address: "127.0.0.1:45671".into()
            }
        );
        assert_eq!(config.hostname, "mysbns.servicebus.windows.net");
        assert_eq!(config.message_count, 100);
    }

    #[test]
    fn default_endpoint_is_namespace_on_5671() {
        let config = config(&[
            ("OPERATION_MODE", "Consumer"),
            ("MESSAGE_COUNT", "3"),
            ("AZURE_SERVICEBUS_QUEUE_NAME", "q"),
            ("AZURE_SERVICEBUS_HOSTNAME", "ns.servicebus.windows.net"),
        ])
        .unwrap();
        assert_eq!(config.mode, Mode::Consumer);
        assert_eq!(config.endpoint.address, "ns.servicebus.windows.net:5671");
        assert_eq!(config.message_count, 3);
    }

    #[test]
    fn missing_or_invalid_settings_are_named() {
        let error = config(&[("OPERATION_MODE", "producer")]).unwrap_err();
        assert!(
            error.to_string().contains("AZURE_SERVICEBUS_HOSTNAME"),
            "{error}"
        );
        let error = config(&[("OPERATION_MODE", "both")]).unwrap_err();
        assert!(
            error.to_string().contains("'producer' or 'consumer'"),
            "{error}"
        );
        assert!(Endpoint::parse("http://x").is_err());
        assert_eq!(
            Endpoint::parse("amqp://127.0.0.1").unwrap().address,
            "127.0.0.1:5672"
        );
    }
}
