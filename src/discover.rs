//! `discover`: point it at Redis servers and RabbitMQ brokers, get a config that serves the
//! truth for the job-library queues found there.
//!
//! It only reads, and it reads through the adapter's own sources: for Redis, `INFO keyspace`
//! tells the dbs that hold keys, then a probe config of one `{library: L, queue: "*"}` metric
//! per library and db is polled once, so queues are found exactly as `serve` will find them
//! (registries, marker keys; `sources::redis::libraries`); the keys no found library explains
//! are counted by `SCAN`. For RabbitMQ, every vhost's queues and bindings are listed through
//! the management API and recognised by `sources::rabbitmq::libraries::recognise`. For
//! PostgreSQL, a probe config of one `{library: L, queue: "*"}` metric per library is polled
//! once: a library whose tables are missing is not there, one whose tables are read is, with
//! the queues that have unfinished jobs (none: a metric over all its queues). The printed
//! config names, for every queue found, one metric per measure its library keeps there, and it
//! is polled once before it is printed, so the summary shows what `serve` would serve.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::check;
use crate::cli::discover::DiscoverArgs;
use crate::config::Config;
use crate::primitives::{Secret, redact_url};
use crate::sources::measure::{COUNTER_MEASURES, JOB_LIBRARY_MEASURES, Measure};
use crate::sources::postgres::config::{PgLibrary, PostgresSourceConfig};
use crate::sources::postgres::libraries as pg_libraries;
use crate::sources::rabbitmq::libraries as rabbit_libraries;
use crate::sources::rabbitmq::management::{ListError, Management};
use crate::sources::redis::batch::Batch;
use crate::sources::redis::config::{Library, RedisSourceConfig};
use crate::sources::redis::libraries::{self as redis_libraries, Layout, SCOPE_QUEUE};
use crate::sources::redis::reply;
use crate::sources::redis::topology::Topology;

/// How long one server may take to answer one request.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Most keys of one db that are classified; beyond, they are not counted.
const MAX_KEYS_COUNTED: usize = 1_000_000;
/// Every Redis library and the key prefixes looked for, in the order the config lists them:
/// each library's default, and for BullMQ also `{bull}`, the hash-tagged prefix its docs
/// require on a Redis Cluster. Other prefixes are not guessed.
const REDIS_PROBES: [(Library, &str); 9] = [
    (Library::Sidekiq, ""),
    (Library::Rq, ""),
    (Library::Celery, ""),
    (Library::Dramatiq, "dramatiq"),
    (Library::Arq, ""),
    (Library::Huey, ""),
    (Library::Bullmq, "bull"),
    (Library::Bullmq, "{bull}"),
    (Library::BeeQueue, "bq"),
];

/// What `discover` found: the config (for stdout) and the summary (for stderr).
pub struct Discovered {
    /// A complete config that `serve` accepts as it is.
    pub config: String,
    /// A table of the queues found, their waiting work and oldest age, and what was not
    /// recognised.
    pub summary: String,
}

/// One metric of the printed config.
struct Metric {
    name: String,
    source: String,
    measure: Measure,
    /// The `redis:` or `rabbitmq:` block, a YAML flow mapping.
    block: String,
    /// The queue it is about, for the summary: (source, library, vhost, queue).
    about: Option<(String, String, String, String)>,
}

/// A queue found.
struct FoundQueue {
    source: String,
    library: String,
    vhost: String,
    queue: String,
}

/// Runs `discover`.
///
/// # Errors
/// A connection that cannot be read (refused, wrong credentials), a password written in a
/// URL, or nothing to look at.
pub async fn run(args: &DiscoverArgs) -> anyhow::Result<Discovered> {
    if args.redis.is_empty()
        && args.redis_sentinel.is_empty()
        && args.redis_cluster.is_empty()
        && args.rabbitmq_management.is_empty()
        && args.postgres.is_empty()
    {
        bail!(
            "nothing to look at: give --redis, --redis-sentinel, --redis-cluster, --rabbitmq-management or --postgres"
        );
    }
    let credentials = credentials_yaml(args);
    let mut f = Findings::default();
    for (i, block) in redis_blocks(args)?.into_iter().enumerate() {
        find_redis(&mut f, &format!("redis{}", i + 1), &block, &credentials).await?;
    }
    for (i, url) in args.rabbitmq_management.iter().enumerate() {
        find_rabbitmq(
            &mut f,
            &format!("rabbitmq{}", i + 1),
            url,
            args,
            &credentials,
        )
        .await?;
    }
    for (i, url) in args.postgres.iter().enumerate() {
        find_postgres(&mut f, &format!("postgres{}", i + 1), url, &credentials).await?;
    }
    let Findings {
        sources,
        mut metrics,
        found,
        mut notes,
    } = f;
    if sources.is_empty() {
        bail!(
            "no job-library queue found{}",
            notes.iter().map(|n| format!("\n  {n}")).collect::<String>()
        );
    }
    notes.push(
        "rates (arrival_rate, completion_rate, drain_seconds) are not written: add them where a library counts jobs (README, \"Rates and drain time\")".into(),
    );
    unique_names(&mut metrics);
    let config = render(&sources, &metrics);
    Config::from_yaml(&config, std::path::Path::new("discovered.yaml"))
        .context("the config discover wrote does not load (a bug: please report it)")?;
    let summary = summarise(&config, &metrics, &found, &notes).await?;
    Ok(Discovered { config, summary })
}

/// The measures `discover` writes a metric for, where a library keeps them: all but those
/// from counters ([`COUNTER_MEASURES`]).
fn written_measures() -> impl Iterator<Item = &'static Measure> {
    JOB_LIBRARY_MEASURES
        .iter()
        .filter(|m| !COUNTER_MEASURES.contains(m))
}

/// What `discover` has found so far, and its notes for the summary.
#[derive(Default)]
struct Findings {
    /// Each source of the config: its name and its block.
    sources: Vec<(String, String)>,
    metrics: Vec<Metric>,
    found: Vec<FoundQueue>,
    notes: Vec<String>,
}

/// Looks at one Redis connection (`block`, the start of its `redis:` block): every db that
/// holds keys, named `<base>_db<N>`.
async fn find_redis(
    f: &mut Findings,
    base: &str,
    block: &str,
    credentials: &str,
) -> anyhow::Result<()> {
    let conn = redis_connection(&format!("{block}{credentials}"))?;
    let cluster = conn.cluster.is_some();
    let dbs = if cluster {
        vec![0]
    } else {
        dbs_with_keys(&conn).await.with_context(|| conn.display())?
    };
    if dbs.is_empty() {
        f.notes
            .push(format!("{}: no db holds keys", conn.display()));
    }
    for db in dbs {
        let source = format!("{base}_db{db}");
        let db_field = if cluster {
            String::new()
        } else {
            format!(", db: {db}")
        };
        let source_block = format!("{block}{credentials}{db_field}");
        let queues = redis_queues(&source, &source_block).await?;
        let mut by_library: BTreeMap<(Library, &str), Vec<String>> = BTreeMap::new();
        for (library, prefix, queue) in queues {
            by_library.entry((library, prefix)).or_default().push(queue);
        }
        let unexplained = unexplained_keys(&source_block, &by_library).await?;
        f.notes.push(match unexplained {
            Some(0) => format!("{source}: every key belongs to a library found"),
            Some(n) => format!("{source}: {n} key(s) no library found explains, left out"),
            None => format!(
                "{source}: more than {MAX_KEYS_COUNTED} keys; the ones no library explains were not counted"
            ),
        });
        if by_library.is_empty() {
            continue;
        }
        f.sources
            .push((source.clone(), format!("redis: {{{source_block}}}")));
        for ((library, prefix), queues) in &by_library {
            redis_metrics(
                &source,
                *library,
                prefix,
                queues,
                &mut f.metrics,
                &mut f.found,
            );
        }
    }
    Ok(())
}

/// Looks at one RabbitMQ management API: every vhost, as source `source`.
async fn find_rabbitmq(
    f: &mut Findings,
    source: &str,
    url: &str,
    args: &DiscoverArgs,
    credentials: &str,
) -> anyhow::Result<()> {
    if redact_url(url) != *url {
        bail!(
            "{}: discover prints a config; give the password with --password-env or --password-file, not in the URL",
            redact_url(url)
        );
    }
    let source = source.to_string();
    let client = Management::new(
        url,
        args.username.as_deref(),
        password(args)?,
        None,
        TIMEOUT,
        crate::sources::http::DEFAULT_MAX_RESPONSE_BYTES,
    )
    .map_err(anyhow::Error::msg)?;
    let vhosts = client
        .list_vhosts()
        .await
        .map_err(anyhow::Error::msg)
        .with_context(|| url.to_string())?;
    let mut any = false;
    for vhost in vhosts {
        let queues = match client.list_queues(&vhost).await {
            Ok((queues, _)) => queues,
            // Deleted since it was listed.
            Err(ListError::VhostMissing) => continue,
            Err(ListError::Failed(e)) => bail!("{url}: listing vhost {vhost:?}: {e}"),
        };
        let names: BTreeSet<String> = queues.into_iter().map(|q| q.name).collect();
        let bindings = client
            .list_bindings(&vhost)
            .await
            .map_err(anyhow::Error::msg)?;
        let (libraries, known) = rabbit_libraries::recognise(&names, &bindings);
        let unknown = names.difference(&known).count();
        if unknown > 0 {
            f.notes.push(format!(
                "{source} vhost {vhost:?}: {unknown} queue(s) no library found explains, left out"
            ));
        }
        for (library, queue) in libraries {
            any = true;
            for measure in written_measures() {
                if let rabbit_libraries::Layout::Queue { .. } =
                    rabbit_libraries::layout(library, &queue, *measure)
                {
                    f.metrics.push(Metric {
                        name: metric_name(library.as_str(), &queue, *measure),
                        source: source.clone(),
                        measure: *measure,
                        block: format!(
                            "rabbitmq: {{vhost: {}, library: {}, queue: {}}}",
                            quoted(&vhost),
                            library.as_str(),
                            quoted(&queue)
                        ),
                        about: Some((
                            source.clone(),
                            library.as_str().into(),
                            vhost.clone(),
                            queue.clone(),
                        )),
                    });
                }
            }
            f.found.push(FoundQueue {
                source: source.clone(),
                library: library.as_str().into(),
                vhost: vhost.clone(),
                queue,
            });
        }
    }
    if any {
        f.sources.push((
            source,
            format!("rabbitmq: {{management_url: {}{credentials}}}", quoted(url)),
        ));
    }
    Ok(())
}

/// Looks at one PostgreSQL database for every library's tables, as source `source`.
async fn find_postgres(
    f: &mut Findings,
    source: &str,
    url: &str,
    credentials: &str,
) -> anyhow::Result<()> {
    let block = format!("url: {}{credentials}", quoted(url));
    let conn: PostgresSourceConfig =
        yaml_serde::from_str(&format!("{{{block}}}")).context("--postgres")?;
    conn.endpoint()
        .map_err(|e| anyhow::anyhow!("--postgres: {e}"))?;
    let mut probe = format!(
        "sources:\n  {source}:\n    postgres: {{{block}, wake: {{enabled: false}}}}\nmetrics:\n"
    );
    for (i, library) in PgLibrary::ALL.iter().enumerate() {
        let _ = writeln!(
            probe,
            "  - {{name: probe.{i}, source: {source}, measure: length, postgres: {{library: {}, queue: \"*\"}}}}",
            library.as_str()
        );
    }
    let config = Config::from_yaml(&probe, std::path::Path::new("discover-probe.yaml"))?;
    let store = check::poll(&config).await?;
    let mut any = false;
    for (i, library) in PgLibrary::ALL.iter().enumerate() {
        let Some((_, state)) = store.state(&format!("probe.{i}")) else {
            continue;
        };
        if let Some(failure) = &state.failure {
            bail!("{source}: {}", failure.message);
        }
        let mut queues = Vec::new();
        let mut missing = false;
        for s in &state.series {
            match &s.value {
                Err(e) if e.0.contains("does not exist") => missing = true,
                Err(e) => f
                    .notes
                    .push(format!("{source}: {}: {}", library.as_str(), e.0)),
                Ok(_) => {
                    if let Some(q) = s.labels.raw_iter().find(|(k, _)| *k == "queue") {
                        queues.push(q.1.to_string());
                    }
                }
            }
        }
        if missing || (state.series.iter().any(|s| s.value.is_err())) {
            continue;
        }
        any = true;
        let lib = library.as_str();
        let named: Vec<Option<&String>> = if queues.is_empty() {
            f.notes.push(format!(
                "{source}: {lib}'s tables are there with no unfinished job: one metric per measure over all its queues"
            ));
            vec![None]
        } else {
            queues.iter().map(Some).collect()
        };
        for measure in written_measures() {
            if pg_libraries::unknowable(*library, *measure).is_some() {
                continue;
            }
            for queue in &named {
                let (name, q) = match queue {
                    Some(q) => (metric_name(lib, q, *measure), quoted(q)),
                    None => (metric_name(lib, "all_queues", *measure), quoted("*")),
                };
                f.metrics.push(Metric {
                    name,
                    source: source.to_string(),
                    measure: *measure,
                    block: format!("postgres: {{library: {lib}, queue: {q}}}"),
                    about: queue.map(|q| (source.into(), lib.into(), String::new(), q.clone())),
                });
            }
        }
        for q in queues {
            f.found.push(FoundQueue {
                source: source.to_string(),
                library: lib.into(),
                vhost: String::new(),
                queue: q,
            });
        }
    }
    if any {
        f.sources
            .push((source.to_string(), format!("postgres: {{{block}}}")));
    } else {
        f.notes
            .push(format!("{source}: no job library's tables found"));
    }
    Ok(())
}

/// The credential fields every source of the printed config gets, as written after a field.
fn credentials_yaml(args: &DiscoverArgs) -> String {
    let mut out = String::new();
    if let Some(u) = &args.username {
        let _ = write!(out, ", username: {}", quoted(u));
    }
    if let Some(v) = &args.password_env {
        let _ = write!(out, ", password_env: {}", quoted(v));
    }
    if let Some(f) = &args.password_file {
        let _ = write!(out, ", password_file: {}", quoted(&f.to_string_lossy()));
    }
    out
}

/// The password the flags name, read now to look with it.
fn password(args: &DiscoverArgs) -> anyhow::Result<Option<Secret>> {
    let mut credentials = crate::sources::credentials::Credentials {
        username: args.username.clone(),
        password_env: args.password_env.clone(),
        password_file: args.password_file.clone(),
        ..Default::default()
    };
    credentials
        .resolve("discover")
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(credentials.password)
}

/// Each Redis connection the flags give, as the start of a `redis:` block (no credentials,
/// no db).
fn redis_blocks(args: &DiscoverArgs) -> anyhow::Result<Vec<String>> {
    let mut blocks = Vec::new();
    for url in &args.redis {
        if redact_url(url) != *url {
            bail!(
                "{}: discover prints a config; give the password with --password-env or --password-file, not in the URL",
                redact_url(url)
            );
        }
        blocks.push(format!("url: {}", quoted(url)));
    }
    for s in &args.redis_sentinel {
        let Some((master, addresses)) = s.split_once('@') else {
            bail!("--redis-sentinel {s:?}: write MASTER@host:port,host:port");
        };
        let addresses: Vec<String> = addresses.split(',').map(quoted).collect();
        blocks.push(format!(
            "sentinel: {{master_name: {}, addresses: [{}]}}",
            quoted(master),
            addresses.join(", ")
        ));
    }
    for c in &args.redis_cluster {
        let nodes: Vec<String> = c.split(',').map(quoted).collect();
        blocks.push(format!("cluster: {{nodes: [{}]}}", nodes.join(", ")));
    }
    Ok(blocks)
}

/// A Redis connection from a `redis:` block's fields, its password read.
fn redis_connection(fields: &str) -> anyhow::Result<RedisSourceConfig> {
    let mut conn: RedisSourceConfig =
        yaml_serde::from_str(&format!("{{{fields}}}")).context("a Redis connection")?;
    conn.validate("discover", TIMEOUT)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    conn.resolve_secrets("discover")
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(conn)
}

/// The dbs of a server (or a Sentinel's master) that hold keys (`INFO keyspace`).
async fn dbs_with_keys(conn: &RedisSourceConfig) -> anyhow::Result<Vec<i64>> {
    let mut topology = Topology::new(conn, TIMEOUT)?;
    topology.prepare().await?;
    let mut batch = Batch::new();
    batch.add(&[b"INFO", b"keyspace"]);
    let replies = topology.run(&batch, None).await?;
    let text = replies
        .first()
        .map(reply::text)
        .transpose()
        .map_err(anyhow::Error::msg)?
        .flatten()
        .unwrap_or_default();
    // `db3:keys=12,expires=0,avg_ttl=0`
    Ok(text
        .lines()
        .filter_map(|l| l.strip_prefix("db")?.split_once(':'))
        .filter(|(_, rest)| !rest.starts_with("keys=0,"))
        .filter_map(|(db, _)| db.parse().ok())
        .collect())
}

/// The job-library queues in one db, with the prefix each was found under: a probe config of
/// one `*` metric per library and prefix, polled once.
async fn redis_queues(
    source: &str,
    block: &str,
) -> anyhow::Result<Vec<(Library, &'static str, String)>> {
    let mut probe = format!(
        "sources:\n  {source}:\n    redis: {{{block}, wake: {{enabled: false}}}}\nmetrics:\n"
    );
    for (i, (library, prefix)) in REDIS_PROBES.iter().enumerate() {
        let _ = writeln!(
            probe,
            "  - {{name: probe.{i}, source: {source}, measure: length, redis: {{library: {}, queue: \"*\"{}}}}}",
            library.as_str(),
            prefix_field(*library, prefix)
        );
    }
    let config = Config::from_yaml(&probe, std::path::Path::new("discover-probe.yaml"))?;
    let store = check::poll(&config).await?;
    let mut queues = Vec::new();
    for (i, (library, prefix)) in REDIS_PROBES.iter().enumerate() {
        let (library, prefix) = (*library, *prefix);
        let Some((_, state)) = store.state(&format!("probe.{i}")) else {
            continue;
        };
        if let Some(f) = &state.failure {
            bail!("{source}: {}", f.message);
        }
        for s in &state.series {
            let raw: BTreeMap<&str, &str> = s.labels.raw_iter().collect();
            if raw.get("scope") == Some(&SCOPE_QUEUE)
                && let Some(queue) = raw.get("queue")
            {
                queues.push((library, prefix, (*queue).to_string()));
            }
        }
    }
    Ok(queues)
}

/// How many keys of the db no library found explains (`None`: too many keys to count).
async fn unexplained_keys(
    block: &str,
    found: &BTreeMap<(Library, &str), Vec<String>>,
) -> anyhow::Result<Option<usize>> {
    let conn = redis_connection(block)?;
    let mut topology = Topology::new(&conn, TIMEOUT)?;
    topology.prepare().await?;
    let mut unexplained = 0;
    let mut seen = 0;
    for ty in ["string", "list", "set", "zset", "hash", "stream"] {
        let scanned = match topology.scan("*", ty, MAX_KEYS_COUNTED).await {
            Ok(s) => s,
            Err(crate::sources::SourceError::BadReply { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        seen += scanned.keys.len();
        if seen > MAX_KEYS_COUNTED {
            return Ok(None);
        }
        unexplained += scanned
            .keys
            .iter()
            .filter(|key| {
                !found.iter().any(|((library, prefix), queues)| {
                    redis_libraries::owns(*library, prefix, queues, key)
                })
            })
            .count();
    }
    Ok(Some(unexplained))
}

/// The metrics of `library`'s `queues` in `source`: one per measure it keeps per queue, and one
/// per measure it keeps for all queues at once.
fn redis_metrics(
    source: &str,
    library: Library,
    prefix: &str,
    queues: &[String],
    metrics: &mut Vec<Metric>,
    found: &mut Vec<FoundQueue>,
) {
    let lib = library.as_str();
    let with_prefix = prefix_field(library, prefix);
    for measure in written_measures() {
        match redis_libraries::layout(library, prefix, "", *measure) {
            Layout::AllQueues(_) => metrics.push(Metric {
                name: metric_name(lib, "all_queues", *measure),
                source: source.to_string(),
                measure: *measure,
                block: format!("redis: {{library: {lib}, queue: \"*\"{with_prefix}}}"),
                about: None,
            }),
            Layout::PerQueue(_) | Layout::Drain { .. } => {
                for queue in queues {
                    metrics.push(Metric {
                        name: metric_name(lib, queue, *measure),
                        source: source.to_string(),
                        measure: *measure,
                        block: format!(
                            "redis: {{library: {lib}, queue: {}{with_prefix}}}",
                            quoted(queue)
                        ),
                        about: Some((source.into(), lib.into(), String::new(), queue.clone())),
                    });
                }
            }
            Layout::Unknowable(_) => {}
        }
    }
    for queue in queues {
        found.push(FoundQueue {
            source: source.to_string(),
            library: lib.into(),
            vhost: String::new(),
            queue: queue.clone(),
        });
    }
}

/// The `prefix` field of a library block: written only where it is not the library's default.
fn prefix_field(library: Library, prefix: &str) -> String {
    if library.default_prefix().is_none_or(|d| d == prefix) {
        String::new()
    } else {
        format!(", prefix: {}", quoted(prefix))
    }
}

/// `<library>_<queue>_<measure>`, made a valid metric name (lowercase letters, digits, `_`,
/// `.`, `-`).
fn metric_name(library: &str, queue: &str, measure: Measure) -> String {
    valid_name(&format!("{library}_{queue}_{measure}"))
}

/// `name` with every character a metric name cannot hold made `_`, and letters lowercase.
fn valid_name(name: &str) -> String {
    name.chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '_' | '.' | '-') => c,
            _ => '_',
        })
        .collect()
}

/// Makes every metric name unique: a name two metrics share gets what tells them apart
/// appended (the vhost of a RabbitMQ queue, else the source), then a number.
fn unique_names(metrics: &mut [Metric]) {
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for m in metrics.iter() {
        *count.entry(m.name.clone()).or_default() += 1;
    }
    for m in metrics.iter_mut() {
        if count[&m.name] > 1 {
            let apart = match &m.about {
                Some((_, _, vhost, _)) if !vhost.is_empty() => format!("{}_{vhost}", m.source),
                _ => m.source.clone(),
            };
            m.name = valid_name(&format!("{}_{apart}", m.name));
        }
    }
    let mut taken = BTreeSet::new();
    for m in metrics.iter_mut() {
        let mut name = m.name.clone();
        let mut n = 2;
        while !taken.insert(name.clone()) {
            name = format!("{}_{n}", m.name);
            n += 1;
        }
        m.name = name;
    }
}

/// A YAML double-quoted scalar (a JSON string is one).
fn quoted(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// The config: the sources, then the metrics.
fn render(sources: &[(String, String)], metrics: &[Metric]) -> String {
    let mut out = String::from(
        "# Written by `queue-metrics-adapter discover`: the job-library queues it found, one metric\n# per measure each library keeps there (README: \"Job libraries\"). Review the names, then serve it.\n",
    );
    out.push_str("sources:\n");
    for (name, block) in sources {
        let _ = writeln!(out, "  {name}:\n    {block}");
    }
    out.push_str("metrics:\n");
    if metrics.is_empty() {
        out.truncate(out.len() - "metrics:\n".len());
        out.push_str("metrics: []\n");
    }
    for m in metrics {
        let _ = writeln!(
            out,
            "  - {{name: {}, source: {}, measure: {}, {}}}",
            m.name, m.source, m.measure, m.block
        );
    }
    out
}

/// Polls the written config once and tabulates each queue found: its waiting work and its
/// oldest job's age as `serve` would serve them, then the notes.
async fn summarise(
    config: &str,
    metrics: &[Metric],
    found: &[FoundQueue],
    notes: &[String],
) -> anyhow::Result<String> {
    let parsed = Config::from_yaml(config, std::path::Path::new("discovered.yaml"))?;
    let store = if parsed.sources.is_empty() {
        None
    } else {
        Some(check::poll(&parsed).await?)
    };
    let value_of = |q: &FoundQueue, measure: Measure| -> String {
        let Some(store) = &store else {
            return "-".into();
        };
        let Some(m) = metrics.iter().find(|m| {
            m.measure == measure
                && m.about.as_ref().is_some_and(|(s, l, v, name)| {
                    *s == q.source && *l == q.library && *v == q.vhost && *name == q.queue
                })
        }) else {
            return "none recorded".into();
        };
        match store.state(&m.name) {
            Some((_, state)) => match (&state.failure, state.series.first()) {
                (Some(f), _) => format!("error: {}", f.message),
                (None, Some(s)) => match &s.value {
                    Ok(v) => format!("{v:.1}").trim_end_matches(".0").to_string(),
                    Err(e) => format!("error: {e}"),
                },
                (None, None) => "-".into(),
            },
            None => "-".into(),
        }
    };
    let mut rows = vec![[
        "SOURCE".to_string(),
        "LIBRARY".into(),
        "VHOST".into(),
        "QUEUE".into(),
        "WAITING".into(),
        "OLDEST AGE (s)".into(),
    ]];
    for q in found {
        rows.push([
            q.source.clone(),
            q.library.clone(),
            if q.vhost.is_empty() {
                "-".into()
            } else {
                q.vhost.clone()
            },
            q.queue.clone(),
            value_of(q, Measure::Length),
            value_of(q, Measure::OldestAgeSeconds),
        ]);
    }
    let mut out = check::aligned(&rows);
    let _ = writeln!(
        out,
        "\n{} queue(s) found, {} metric(s) written",
        found.len(),
        metrics.len()
    );
    for n in notes {
        let _ = writeln!(out, "{n}");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_are_valid_and_unique() {
        assert_eq!(
            metric_name("bee-queue", "Embed:v2", Measure::Length),
            "bee-queue_embed_v2_length"
        );
        let metric = |name: &str, source: &str| Metric {
            name: name.into(),
            source: source.into(),
            measure: Measure::Length,
            block: String::new(),
            about: None,
        };
        let mut metrics = vec![metric("a", "s1"), metric("a", "s2"), metric("b", "s1")];
        unique_names(&mut metrics);
        let names: Vec<&str> = metrics.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["a_s1", "a_s2", "b"]);
    }

    #[test]
    fn a_password_in_a_url_is_refused_never_printed() {
        let args = DiscoverArgs {
            redis: vec!["redis://:hunter2@127.0.0.1:6379".into()],
            ..Default::default()
        };
        let err = redis_blocks(&args).expect_err("refused").to_string();
        assert!(
            err.contains("--password-env") && !err.contains("hunter2"),
            "{err}"
        );
    }
}
