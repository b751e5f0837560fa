//! How every Kafka client of a Sluice process connects (docs/security.md, the broker): the
//! bootstrap servers each client is given, plus the connection properties set once per process
//! with [`set_connection`] (`security.protocol`, SASL/SCRAM credentials, TLS trust), so that the
//! stream threads, the restore and discovery consumers, the admin client, the API's producer and
//! replica all authenticate as the process's principal.

use std::sync::RwLock;

use rdkafka::config::ClientConfig;

/// librdkafka properties every client of this process gets (besides `bootstrap.servers`).
static CONNECTION: RwLock<Vec<(String, String)>> = RwLock::new(Vec::new());

/// Properties of the clients of one role, when it authenticates as a principal of its own.
static INGEST_CONNECTION: RwLock<Option<Vec<(String, String)>>> = RwLock::new(None);
/// See [`INGEST_CONNECTION`].
static CONSOLE_CONNECTION: RwLock<Option<Vec<(String, String)>>> = RwLock::new(None);

/// A part of Sluice that may authenticate as its own principal while it shares a process
/// with others (`sluice dev` runs the processors, the API and the registry in one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The HTTP API's clients: its command producer and its replica of the users changelog.
    Ingest,
    /// The operator console's clients (topic browser, consumer-group lag, dead-letter
    /// replays); the API's when it has no principal of its own.
    Console,
}

/// How a process authenticates to the brokers. `Debug` never shows the password.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Connection {
    /// Kafka `security.protocol`: `PLAINTEXT` (default), `SASL_PLAINTEXT`, `SASL_SSL` or `SSL`.
    pub security_protocol: Option<String>,
    /// Kafka `sasl.mechanism`, e.g. `SCRAM-SHA-512`.
    pub sasl_mechanism: Option<String>,
    /// SASL user name (the principal is `User:<name>`).
    pub sasl_username: Option<String>,
    /// SASL password.
    pub sasl_password: Option<String>,
    /// CA certificate file trusted for TLS (`ssl.ca.location`).
    pub ssl_ca_location: Option<String>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("security_protocol", &self.security_protocol)
            .field("sasl_mechanism", &self.sasl_mechanism)
            .field("sasl_username", &self.sasl_username)
            .field("sasl_password", &self.sasl_password.as_ref().map(|_| "<redacted>"))
            .field("ssl_ca_location", &self.ssl_ca_location)
            .finish()
    }
}

impl Connection {
    /// The librdkafka properties, checked: SASL needs a mechanism, a user and a password.
    pub fn properties(&self) -> Result<Vec<(String, String)>, String> {
        let protocol = self.security_protocol.clone().unwrap_or_else(|| "PLAINTEXT".to_string()).to_ascii_uppercase();
        if !["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"].contains(&protocol.as_str()) {
            return Err(format!("security_protocol `{protocol}`: use PLAINTEXT, SASL_PLAINTEXT, SASL_SSL or SSL"));
        }
        let mut properties = vec![("security.protocol".to_string(), protocol.clone())];
        if protocol.starts_with("SASL") {
            let mechanism = self.sasl_mechanism.clone().unwrap_or_else(|| "SCRAM-SHA-512".to_string());
            let (Some(username), Some(password)) = (&self.sasl_username, &self.sasl_password) else {
                return Err(format!("security_protocol {protocol} needs sasl_username and sasl_password"));
            };
            properties.push(("sasl.mechanisms".to_string(), mechanism));
            properties.push(("sasl.username".to_string(), username.clone()));
            properties.push(("sasl.password".to_string(), password.clone()));
        }
        if let Some(ca) = &self.ssl_ca_location {
            properties.push(("ssl.ca.location".to_string(), ca.clone()));
        }
        Ok(properties)
    }
}

/// Sets the connection properties of every client this process creates from now on.
pub fn set_connection(connection: &Connection) -> Result<(), String> {
    let properties = connection.properties()?;
    *CONNECTION.write().expect("connection lock") = properties;
    Ok(())
}

/// Sets the connection properties of the clients of `role` created from now on (the others
/// keep this process's, see [`set_connection`]).
pub fn set_role_connection(role: Role, connection: &Connection) -> Result<(), String> {
    let properties = connection.properties()?;
    match role {
        Role::Ingest => *INGEST_CONNECTION.write().expect("connection lock") = Some(properties),
        Role::Console => *CONSOLE_CONNECTION.write().expect("connection lock") = Some(properties),
    }
    Ok(())
}

/// A client configuration for `bootstrap_servers` as `role`: its own connection properties
/// when set, this process's otherwise.
pub fn role_client_config(role: Role, bootstrap_servers: &str) -> ClientConfig {
    let own = match role {
        Role::Ingest => INGEST_CONNECTION.read().expect("connection lock").clone(),
        Role::Console => CONSOLE_CONNECTION.read().expect("connection lock").clone().or_else(|| INGEST_CONNECTION.read().expect("connection lock").clone()),
    };
    let Some(properties) = own else { return client_config(bootstrap_servers) };
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap_servers);
    for (key, value) in properties {
        config.set(key, value);
    }
    config
}

/// The connection properties set for this process (for clients built elsewhere, e.g. the
/// Schema Registry's).
pub fn connection_properties() -> Vec<(String, String)> {
    CONNECTION.read().expect("connection lock").clone()
}

/// A client configuration for `bootstrap_servers` with this process's connection properties.
pub fn client_config(bootstrap_servers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap_servers);
    for (key, value) in CONNECTION.read().expect("connection lock").iter() {
        config.set(key, value);
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sasl_needs_credentials_and_the_password_is_never_shown() {
        let plain = Connection::default().properties().unwrap();
        assert_eq!(plain, vec![("security.protocol".to_string(), "PLAINTEXT".to_string())]);
        let missing = Connection { security_protocol: Some("SASL_PLAINTEXT".into()), ..Connection::default() };
        assert!(missing.properties().unwrap_err().contains("sasl_username"));
        let scram = Connection { security_protocol: Some("sasl_plaintext".into()), sasl_username: Some("sluice-processors".into()), sasl_password: Some("pw-secret".into()), ..Connection::default() };
        let properties = scram.properties().unwrap();
        assert!(properties.contains(&("sasl.mechanisms".to_string(), "SCRAM-SHA-512".to_string())));
        assert!(properties.contains(&("security.protocol".to_string(), "SASL_PLAINTEXT".to_string())));
        assert!(!format!("{scram:?}").contains("pw-secret"));
        assert!(Connection { security_protocol: Some("TELNET".into()), ..Connection::default() }.properties().is_err());
    }
}
