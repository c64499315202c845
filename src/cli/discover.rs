//! `discover`'s flags: the connections to look at, in the forms the config takes, and the
//! credentials they share.

use std::path::PathBuf;

use clap::Args;

/// `queue-metrics-adapter discover`.
#[derive(Args, Debug, Clone, Default)]
pub struct DiscoverArgs {
    /// A Redis server, `redis://host:port` or `rediss://` (repeat). Every db that has keys is
    /// looked at. A password in the URL is refused: the config is printed.
    #[arg(long = "redis", value_name = "URL")]
    pub redis: Vec<String>,
    /// A Sentinel-managed master: `MASTER@host:port,host:port` (repeat).
    #[arg(long = "redis-sentinel", value_name = "MASTER@ADDRESSES")]
    pub redis_sentinel: Vec<String>,
    /// A Redis Cluster: its seed nodes, `host:port,host:port` (repeat).
    #[arg(long = "redis-cluster", value_name = "NODES")]
    pub redis_cluster: Vec<String>,
    /// A RabbitMQ management API, `http(s)://host:15672` (repeat). Every vhost is looked at.
    #[arg(long = "rabbitmq-management", value_name = "URL")]
    pub rabbitmq_management: Vec<String>,
    /// A PostgreSQL database, `postgres://[user@]host:port/db[?sslmode=...]` (repeat). The job
    /// libraries' tables are looked for in their default schemas.
    #[arg(long = "postgres", value_name = "URL")]
    pub postgres: Vec<String>,
    /// The user every connection logs in as (Redis ACL user, RabbitMQ user, PostgreSQL role).
    #[arg(long)]
    pub username: Option<String>,
    /// An environment variable holding the password; the printed config names it too.
    #[arg(long, value_name = "VAR", conflicts_with = "password_file")]
    pub password_env: Option<String>,
    /// A file holding the password; the printed config names it too.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
}
