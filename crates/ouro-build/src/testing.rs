//! Helpers for tests of this crate and of the server (not for production code): an S3-compatible
//! server (moto) started on a free port.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::blobs_s3::{BlobBackend, BlobSettings, MIN_PART_BYTES, S3BlobStore};

/// A moto S3 server on a free port, killed (with its process group) when dropped.
pub struct Moto {
    child: Child,
    pub endpoint: String,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http(port: u16, method: &str, path: &str) -> io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// Starts moto, or `None` (with a loud message) when `moto_server` is not installed. With
/// `CI=true` a missing moto is a failure.
pub fn moto() -> Option<Moto> {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut cmd = Command::new("moto_server");
    cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            if std::env::var("CI").is_ok_and(|c| c == "true") {
                panic!("CI=true but moto_server cannot start ({e}): pip install 'moto[server]'");
            }
            eprintln!(
                "SKIPPING the S3 half of this test: moto_server cannot start ({e}); \
                 install it with pip install 'moto[server]'"
            );
            return None;
        }
    };
    let m = Moto {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
        port,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if http(port, "GET", "/").is_ok_and(|r| r.starts_with("HTTP/1.1")) {
            return Some(m);
        }
        assert!(Instant::now() < deadline, "moto_server did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Moto {
    /// A new empty bucket.
    pub fn bucket(&self, name: &str) -> String {
        let r = http(self.port, "PUT", &format!("/{name}")).unwrap();
        assert!(r.starts_with("HTTP/1.1 200"), "create bucket: {r}");
        name.to_string()
    }

    pub fn settings(&self, bucket: &str, prefix: &str) -> BlobSettings {
        BlobSettings {
            backend: BlobBackend::S3,
            bucket: Some(bucket.into()),
            endpoint: Some(self.endpoint.clone()),
            region: Some("us-east-1".into()),
            access_key_id: Some("testing".into()),
            secret_access_key: Some("testing".into()),
            prefix: prefix.into(),
            ..Default::default()
        }
    }

    /// A store in `bucket` under a fresh prefix (so stores in one bucket are independent).
    pub fn store(&self, bucket: &str, capacity: Option<u64>) -> S3BlobStore {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let prefix = format!("t{}/", N.fetch_add(1, Ordering::SeqCst));
        S3BlobStore::new(&self.settings(bucket, &prefix), capacity)
            .unwrap()
            .with_part_bytes(MIN_PART_BYTES)
    }
}
