//! A private Prometheus (Debian's, installed by `make test`: scripts/ensure-prometheus.sh) on a
//! free port, for the sources' Prometheus modes: the real server scraping stand-ins.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A private Prometheus scraping every second what `scrape_configs` (the YAML list under
/// `scrape_configs:`) names.
pub struct Prometheus {
    child: Child,
    pub url: String,
    dir: std::path::PathBuf,
}

impl Prometheus {
    pub async fn start(scrape_configs: &str) -> Prometheus {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let dir =
            std::env::temp_dir().join(format!("qma-prometheus-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let config = format!(
            "global: {{scrape_interval: 1s, scrape_timeout: 900ms}}\nscrape_configs:\n{scrape_configs}"
        );
        std::fs::write(dir.join("prometheus.yml"), config).expect("config");
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus runs (make test installs it: scripts/ensure-prometheus.sh)");
        let p = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            dir,
        };
        let http = super::http_client();
        let start = Instant::now();
        loop {
            if let Ok(r) = http.get(format!("{}/-/ready", p.url)).send().await
                && r.status() == 200
            {
                return p;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "Prometheus not ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
