//! A real Kubernetes API server for tests: Debian's etcd (`/usr/bin/etcd`)
//! and kube-apiserver v1.20.2 from the directory `GRIFFIN_KUBE_BIN` names
//! (`cargo xtask e2e` sets it to its verified cache,
//! `/var/cache/griffin/kube-v1.20.2/bin`).
//!
//! Each [`ApiServer`] has its own temporary directory (etcd data, serving
//! certificate, service-account key, token file, logs) and free loopback
//! ports (never the e2e cluster's 2379/6443/23790/23800), authenticates
//! with static tokens and authorizes with RBAC. Two users exist: `admin`
//! (group `system:masters`, may do anything) and Griffin's service account
//! `system:serviceaccount:griffin:griffin`, which may do what the RBAC
//! objects a test creates (e.g. `deploy/10-rbac.yaml`) grant it. Dropping
//! the server stops both processes by their PIDs (SIGTERM, then SIGKILL
//! after 10 s) and removes its directory (after a panic, or with
//! `GRIFFIN_KEEP_APISERVER` set, its logs are kept and their path printed).
//!
//! Tests that use it are `#[ignore]`d (they need the binaries) and
//! [`ApiServer::start`] panics when `GRIFFIN_KUBE_BIN` is unset: run with
//! `--ignored`, a missing binary is a failure, never a skip.

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The environment variable naming the Kubernetes binaries' directory.
pub const KUBE_BIN_ENV: &str = "GRIFFIN_KUBE_BIN";

/// The user name of Griffin's service account, as RBAC sees it.
pub const GRIFFIN_USER: &str = "system:serviceaccount:griffin:griffin";

/// How long the API server may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// A running etcd and kube-apiserver (see the module doc).
#[derive(Debug)]
pub struct ApiServer {
    etcd: Option<Child>,
    apiserver: Option<Child>,
    dir: Option<tempfile::TempDir>,
    url: String,
    admin_token: String,
    griffin_token: String,
}

/// Which user a client authenticates as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum User {
    /// `admin`, in `system:masters`.
    Admin,
    /// [`GRIFFIN_USER`], in `system:serviceaccounts`.
    Griffin,
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("binding a free loopback port");
    l.local_addr().expect("local address").port()
}

fn random_token() -> String {
    let mut b = [0u8; 16];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("reading /dev/urandom");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The last `n` bytes of a log file, for a failure message.
fn tail(path: &Path, n: usize) -> String {
    let s = fs::read(path).unwrap_or_default();
    String::from_utf8_lossy(&s[s.len().saturating_sub(n)..]).into_owned()
}

impl ApiServer {
    /// The binaries' directory from [`KUBE_BIN_ENV`]; panics naming the
    /// variable when it is unset or holds no `kube-apiserver`.
    pub fn kube_bin() -> PathBuf {
        let dir = std::env::var_os(KUBE_BIN_ENV).unwrap_or_else(|| {
            panic!(
                "{KUBE_BIN_ENV} is not set: these tests need kube-apiserver v1.20.2 \
                 (run by cargo xtask e2e, or set {KUBE_BIN_ENV}=/var/cache/griffin/kube-v1.20.2/bin)"
            )
        });
        let dir = PathBuf::from(dir);
        assert!(
            dir.join("kube-apiserver").is_file(),
            "{KUBE_BIN_ENV}={} holds no kube-apiserver",
            dir.display()
        );
        dir
    }

    /// Starts etcd and kube-apiserver and waits until the API server is
    /// ready (its `/readyz` answers `ok`). Panics with the end of the
    /// component's log when anything fails.
    pub async fn start() -> ApiServer {
        let bin = Self::kube_bin();
        let dir = tempfile::Builder::new()
            .prefix("griffin-apiserver-")
            .tempdir()
            .expect("temporary directory");
        let d = dir.path().to_owned();
        let (etcd_port, peer_port, api_port) = (free_port(), free_port(), free_port());
        let admin_token = random_token();
        let griffin_token = random_token();
        fs::write(
            d.join("tokens.csv"),
            format!(
                "{admin_token},admin,admin,system:masters\n\
                 {griffin_token},{GRIFFIN_USER},griffin-sa,system:serviceaccounts\n"
            ),
        )
        .expect("writing the token file");
        let st = Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(d.join("sa.key"))
            .arg("2048")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("running openssl (cargo xtask deps installs it)");
        assert!(st.success(), "openssl genrsa failed: {st}");

        let mut s = ApiServer {
            etcd: None,
            apiserver: None,
            dir: Some(dir),
            url: format!("https://127.0.0.1:{api_port}"),
            admin_token,
            griffin_token,
        };
        let log = |name: &str| {
            let f = fs::File::create(d.join(name)).expect("log file");
            (
                Stdio::from(f.try_clone().expect("log file")),
                Stdio::from(f),
            )
        };
        let (out, err) = log("etcd.log");
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        s.etcd = Some(
            Command::new("/usr/bin/etcd")
                .args(["--name", "griffin-test", "--data-dir"])
                .arg(d.join("etcd"))
                .arg(format!("--listen-client-urls={etcd_url}"))
                .arg(format!("--advertise-client-urls={etcd_url}"))
                .arg(format!("--listen-peer-urls={peer_url}"))
                .arg(format!("--initial-advertise-peer-urls={peer_url}"))
                .arg(format!("--initial-cluster=griffin-test={peer_url}"))
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .expect("starting /usr/bin/etcd (Debian's etcd-server: cargo xtask deps)"),
        );
        let (out, err) = log("kube-apiserver.log");
        let key = d.join("sa.key");
        s.apiserver = Some(
            Command::new(bin.join("kube-apiserver"))
                .arg(format!("--etcd-servers={etcd_url}"))
                .args(["--bind-address=127.0.0.1", "--insecure-port=0"])
                .arg(format!("--secure-port={api_port}"))
                .arg(format!("--cert-dir={}", d.join("pki").display()))
                .arg(format!(
                    "--token-auth-file={}",
                    d.join("tokens.csv").display()
                ))
                .arg("--authorization-mode=RBAC")
                .arg(format!("--service-account-key-file={}", key.display()))
                .arg(format!(
                    "--service-account-signing-key-file={}",
                    key.display()
                ))
                .arg("--service-account-issuer=https://kubernetes.default.svc")
                .arg("--service-cluster-ip-range=198.19.1.0/24")
                .arg("--endpoint-reconciler-type=none")
                .arg("--anonymous-auth=false")
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .expect("starting kube-apiserver"),
        );
        s.wait_ready().await;
        s
    }

    async fn wait_ready(&mut self) {
        let client = self.client();
        let t = Instant::now();
        let dir = self.path().to_owned();
        loop {
            for (name, child) in [
                ("etcd", &mut self.etcd),
                ("kube-apiserver", &mut self.apiserver),
            ] {
                if let Some(st) = child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                    panic!(
                        "{name} exited ({st}) before the API server was ready; its log ends:\n{}",
                        tail(&dir.join(format!("{name}.log")), 4000)
                    );
                }
            }
            let req = http::Request::get("/readyz")
                .body(Vec::new())
                .expect("request");
            if let Ok(body) = client.request_text(req).await {
                if body.trim() == "ok" {
                    return;
                }
            }
            assert!(
                t.elapsed() < READY_TIMEOUT,
                "kube-apiserver not ready after {READY_TIMEOUT:?}; its log ends:\n{}",
                tail(&dir.join("kube-apiserver.log"), 4000)
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The server's directory (logs `etcd.log`, `kube-apiserver.log`).
    pub fn path(&self) -> &Path {
        self.dir.as_ref().expect("directory").path()
    }

    /// The PIDs of etcd and kube-apiserver.
    pub fn pids(&self) -> Vec<u32> {
        [&self.etcd, &self.apiserver]
            .into_iter()
            .flatten()
            .map(Child::id)
            .collect()
    }

    /// The API server's URL (`https://127.0.0.1:PORT`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The client configuration for `user` (its token; the self-signed
    /// serving certificate accepted).
    pub fn config(&self, user: User) -> kube::Config {
        let mut c = kube::Config::new(self.url.parse().expect("API server URL"));
        c.accept_invalid_certs = true;
        let token = match user {
            User::Admin => &self.admin_token,
            User::Griffin => &self.griffin_token,
        };
        c.auth_info.token = Some(token.clone().into());
        c
    }

    /// A client as `admin`.
    pub fn client(&self) -> kube::Client {
        self.client_as(User::Admin)
    }

    /// A client as `user`.
    pub fn client_as(&self, user: User) -> kube::Client {
        kube::Client::try_from(self.config(user)).expect("kube client")
    }
}

/// Stops a child by its PID: SIGTERM, then SIGKILL after 10 s.
fn stop(child: &mut Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    let _ = child.wait();
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        // The API server first: it is etcd's client.
        if let Some(c) = self.apiserver.as_mut() {
            stop(c);
        }
        if let Some(c) = self.etcd.as_mut() {
            stop(c);
        }
        if let Some(d) = self.dir.take() {
            if std::thread::panicking() || std::env::var_os("GRIFFIN_KEEP_APISERVER").is_some() {
                let _ = fs::remove_dir_all(d.path().join("etcd"));
                let kept = d.keep();
                eprintln!("apiserver: logs kept in {}", kept.display());
            }
        }
    }
}
