//! Kafka ACLs created with the admin protocol's CreateAcls (docs/security.md, the broker), so
//! that `sluice acls --apply` and `sluice dev` grant what each principal needs without a JVM.
//!
//! rust-rdkafka wraps no ACL call, so this module calls librdkafka's `rd_kafka_CreateAcls`
//! through the bindings rdkafka re-exports: the one place of the workspace with `unsafe` code.
//! Every pointer it creates is destroyed before it returns; librdkafka copies the bindings and
//! their strings when the request is made.
#![allow(unsafe_code)]

use std::ffi::{c_char, CStr, CString};
use std::time::Duration;

use rdkafka::admin::AdminClient;
use rdkafka::bindings as rd;
use rdkafka::client::DefaultClientContext;

/// What a binding applies to, with its pattern type (Kafka's `ResourcePattern`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum AclResource {
    /// One topic.
    Topic(String),
    /// Every topic whose name starts with this.
    TopicPrefix(String),
    /// One consumer group.
    Group(String),
    /// Every consumer group whose id starts with this.
    GroupPrefix(String),
    /// Every transactional id that starts with this.
    TransactionalIdPrefix(String),
    /// The cluster (`IdempotentWrite`).
    Cluster,
}

impl AclResource {
    fn native(&self) -> (rd::rd_kafka_ResourceType_t, &str, rd::rd_kafka_ResourcePatternType_t) {
        use rd::rd_kafka_ResourcePatternType_t::{RD_KAFKA_RESOURCE_PATTERN_LITERAL as LITERAL, RD_KAFKA_RESOURCE_PATTERN_PREFIXED as PREFIXED};
        use rd::rd_kafka_ResourceType_t::*;
        match self {
            AclResource::Topic(name) => (RD_KAFKA_RESOURCE_TOPIC, name, LITERAL),
            AclResource::TopicPrefix(name) => (RD_KAFKA_RESOURCE_TOPIC, name, PREFIXED),
            AclResource::Group(name) => (RD_KAFKA_RESOURCE_GROUP, name, LITERAL),
            AclResource::GroupPrefix(name) => (RD_KAFKA_RESOURCE_GROUP, name, PREFIXED),
            AclResource::TransactionalIdPrefix(name) => (RD_KAFKA_RESOURCE_TRANSACTIONAL_ID, name, PREFIXED),
            AclResource::Cluster => (RD_KAFKA_RESOURCE_BROKER, "kafka-cluster", LITERAL),
        }
    }
}

/// An operation by its Kafka name (`Read`, `Write`, `Create`, `Describe`, `DescribeConfigs`,
/// `IdempotentWrite`, ...).
fn operation(name: &str) -> Option<rd::rd_kafka_AclOperation_t> {
    use rd::rd_kafka_AclOperation_t::*;
    Some(match name {
        "All" => RD_KAFKA_ACL_OPERATION_ALL,
        "Read" => RD_KAFKA_ACL_OPERATION_READ,
        "Write" => RD_KAFKA_ACL_OPERATION_WRITE,
        "Create" => RD_KAFKA_ACL_OPERATION_CREATE,
        "Delete" => RD_KAFKA_ACL_OPERATION_DELETE,
        "Alter" => RD_KAFKA_ACL_OPERATION_ALTER,
        "Describe" => RD_KAFKA_ACL_OPERATION_DESCRIBE,
        "ClusterAction" => RD_KAFKA_ACL_OPERATION_CLUSTER_ACTION,
        "DescribeConfigs" => RD_KAFKA_ACL_OPERATION_DESCRIBE_CONFIGS,
        "AlterConfigs" => RD_KAFKA_ACL_OPERATION_ALTER_CONFIGS,
        "IdempotentWrite" => RD_KAFKA_ACL_OPERATION_IDEMPOTENT_WRITE,
        _ => return None,
    })
}

/// One ALLOW binding: `principal` (`User:name`) may do `operation` on `resource`, from any host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclBinding {
    /// `User:<name>`.
    pub principal: String,
    /// The operation's Kafka name, e.g. `Write`.
    pub operation: String,
    /// What it applies to.
    pub resource: AclResource,
}

/// The bindings of one request, owned until dropped.
struct Bindings(Vec<*mut rd::rd_kafka_AclBinding_t>);

impl Drop for Bindings {
    fn drop(&mut self) {
        for &binding in &self.0 {
            // SAFETY: each pointer came from rd_kafka_AclBinding_new and is destroyed once.
            unsafe { rd::rd_kafka_AclBinding_destroy(binding) };
        }
    }
}

fn c_string(what: &str, text: &str) -> Result<CString, String> {
    CString::new(text).map_err(|_| format!("{what} `{text}` contains a NUL byte"))
}

/// Text of a C string from librdkafka (empty for null).
fn text(ptr: *const c_char) -> String {
    if ptr.is_null() {
        return String::new();
    }
    // SAFETY: librdkafka returns NUL-terminated strings that live as long as their object,
    // which outlives this copy.
    unsafe { CStr::from_ptr(ptr) }.to_string_lossy().into_owned()
}

/// Creates `bindings` on the cluster at `bootstrap_servers`, authenticating as this process
/// (see [`crate::kafka_client`]; an administrator: Kafka allows ACL changes to `Alter` on the
/// cluster). Bindings that exist already are left as they are. Errors name every binding the
/// broker refused.
pub fn create_acls(bootstrap_servers: &str, bindings: &[AclBinding], timeout: Duration) -> Result<(), String> {
    if bindings.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = crate::kafka_client::client_config(bootstrap_servers).create().map_err(|e| format!("cannot create the admin client: {e}"))?;
    let mut native = Bindings(Vec::with_capacity(bindings.len()));
    let any_host = c_string("host", "*")?;
    for binding in bindings {
        let (kind, name, pattern) = binding.resource.native();
        let name = c_string("resource name", name)?;
        let principal = c_string("principal", &binding.principal)?;
        let operation = operation(&binding.operation).ok_or_else(|| format!("unknown ACL operation `{}`", binding.operation))?;
        let mut error = [0 as c_char; 512];
        // SAFETY: the strings are valid NUL-terminated C strings for the duration of the call
        // (librdkafka copies them); `error` is a writable buffer of the size given.
        let created = unsafe {
            rd::rd_kafka_AclBinding_new(
                kind,
                name.as_ptr(),
                pattern,
                principal.as_ptr(),
                any_host.as_ptr(),
                operation,
                rd::rd_kafka_AclPermissionType_t::RD_KAFKA_ACL_PERMISSION_TYPE_ALLOW,
                error.as_mut_ptr(),
                error.len(),
            )
        };
        if created.is_null() {
            return Err(format!("ACL binding {binding:?}: {}", text(error.as_ptr())));
        }
        native.0.push(created);
    }
    let client = admin.inner().native_ptr();
    let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: `client` is the live handle of `admin`, which outlives every call below; the
    // options, queue and event are destroyed exactly once, and the result array is read only
    // while its event lives.
    unsafe {
        let options = rd::rd_kafka_AdminOptions_new(client, rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_CREATEACLS);
        let mut error = [0 as c_char; 512];
        rd::rd_kafka_AdminOptions_set_request_timeout(options, timeout_ms, error.as_mut_ptr(), error.len());
        let queue = rd::rd_kafka_queue_new(client);
        rd::rd_kafka_CreateAcls(client, native.0.as_mut_ptr(), native.0.len(), options, queue);
        let event = rd::rd_kafka_queue_poll(queue, timeout_ms.saturating_add(1000));
        let outcome = if event.is_null() {
            Err(format!("no answer to CreateAcls from {bootstrap_servers} within {timeout:?}"))
        } else if rd::rd_kafka_event_error(event) != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            Err(format!("CreateAcls failed: {}", text(rd::rd_kafka_event_error_string(event))))
        } else {
            let result = rd::rd_kafka_event_CreateAcls_result(event);
            let mut count = 0usize;
            let results = rd::rd_kafka_CreateAcls_result_acls(result, &mut count);
            let refused: Vec<String> = (0..count)
                .filter_map(|i| {
                    let error = rd::rd_kafka_acl_result_error(*results.add(i));
                    (!error.is_null()).then(|| format!("{:?}: {}", bindings.get(i), text(rd::rd_kafka_error_string(error))))
                })
                .collect();
            match refused.first() {
                None => Ok(()),
                // The broker says the same for each binding when the principal may not alter ACLs.
                Some(first) => Err(format!("the broker refused {} of {} ACL bindings; the first: {first}", refused.len(), bindings.len())),
            }
        };
        if !event.is_null() {
            rd::rd_kafka_event_destroy(event);
        }
        rd::rd_kafka_queue_destroy(queue);
        rd::rd_kafka_AdminOptions_destroy(options);
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_known_by_their_kafka_names() {
        assert!(operation("IdempotentWrite").is_some() && operation("DescribeConfigs").is_some());
        assert!(operation("Teleport").is_none());
        assert_eq!(AclResource::Cluster.native().1, "kafka-cluster");
    }
}
