//! TLS and mutual TLS (config `server.tls`) end to end: a CA, a server certificate for
//! 127.0.0.1 and a client certificate made with rcgen; the client over gRPC and REST with and
//! without its certificate; plain HTTP to a TLS port; a bad certificate file at start.

use std::path::Path;

use hanzo_kms_client::{Client, Protocol};
use hanzo_kms_core::ErrorKind;
use hanzo_kms_core::config::TlsConfig;
use hanzo_kms_server::Server;

#[path = "../../server/tests/common/mod.rs"]
mod common;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};

struct Pki {
    ca: String,
    server: (String, String),
    client: (String, String),
    /// A client certificate from a CA the server does not trust.
    stranger: (String, String),
}

fn ca() -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut p =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.extended_key_usages = vec![usage];
    let cert = p.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn pki() -> Pki {
    let ca = ca();
    let other = self::ca();
    Pki {
        ca: ca.pem(),
        server: leaf(
            &ca,
            &["127.0.0.1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
        ),
        client: leaf(
            &ca,
            &["inference-node-1"],
            ExtendedKeyUsagePurpose::ClientAuth,
        ),
        stranger: leaf(&other, &["stranger"], ExtendedKeyUsagePurpose::ClientAuth),
    }
}

async fn start(dir: &Path, tls: TlsConfig) -> hanzo_kms_core::Result<(Server, String)> {
    common::bind(&dir.join("data"), "", |o| o.tls = Some(tls)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_admits_only_clients_with_a_certificate_from_the_ca() {
    let d = tempfile::tempdir().unwrap();
    let p = pki();
    let w = |name: &str, s: &str| {
        let path = d.path().join(name);
        std::fs::write(&path, s).unwrap();
        path
    };
    let tls = TlsConfig {
        cert_file: w("server.pem", &p.server.0),
        key_file: w("server.key", &p.server.1),
        client_ca_file: Some(w("ca.pem", &p.ca)),
    };
    let (server, admin) = start(d.path(), tls).await.unwrap();
    assert!(server.is_tls());
    let rest = server.local_addr().unwrap();
    let grpc = server.grpc_addr().unwrap().unwrap();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = rx.await;
    }));

    for (protocol, addr) in [(Protocol::Grpc, grpc), (Protocol::Rest, rest)] {
        let url = format!("https://{addr}");
        // With the client certificate: served, and the audit records the peer.
        let c = Client::builder(&url, &admin)
            .protocol(protocol)
            .tls_ca_pem(p.ca.clone().into_bytes())
            .tls_identity(
                p.client.0.clone().into_bytes(),
                p.client.1.clone().into_bytes(),
            )
            .retries(0)
            .connect()
            .await
            .unwrap();
        let keys = c
            .create_model_keyspace("acme", &format!("m-{protocol:?}"))
            .await
            .unwrap();
        assert_eq!(keys.len(), 3);

        // Without a certificate, or with one from another CA: refused in the handshake.
        for identity in [None, Some(&p.stranger)] {
            let mut b = Client::builder(&url, &admin)
                .protocol(protocol)
                .tls_ca_pem(p.ca.clone().into_bytes())
                .retries(0);
            if let Some((cert, key)) = identity {
                b = b.tls_identity(cert.clone().into_bytes(), key.clone().into_bytes());
            }
            let e = b.connect().await.unwrap().list_keys("").await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Unavailable, "{protocol:?}: {e}");
        }
        // A client that does not trust the server's CA refuses the server.
        let e = Client::builder(&url, &admin)
            .protocol(protocol)
            .tls_ca_pem(ca().pem().into_bytes())
            .tls_identity(
                p.client.0.clone().into_bytes(),
                p.client.1.clone().into_bytes(),
            )
            .retries(0)
            .connect()
            .await
            .unwrap()
            .list_keys("")
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{protocol:?}: {e}");
        // Plain HTTP to the TLS port gets nothing.
        let e = Client::builder(&format!("http://{addr}"), &admin)
            .protocol(protocol)
            .retries(0)
            .timeout(std::time::Duration::from_secs(3))
            .connect()
            .await
            .unwrap()
            .list_keys("")
            .await
            .unwrap_err();
        assert!(
            matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Internal),
            "{protocol:?}: {e}"
        );
    }
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_bad_certificate_or_key_file_stops_the_start_naming_the_setting() {
    let d = tempfile::tempdir().unwrap();
    let p = pki();
    std::fs::write(d.path().join("cert.pem"), &p.server.0).unwrap();
    std::fs::write(d.path().join("garbage.pem"), "not a certificate").unwrap();
    std::fs::write(d.path().join("other.key"), &p.client.1).unwrap();
    let cases = [
        ("garbage.pem", "cert.pem", "server.tls.cert_file"),
        ("cert.pem", "missing.key", "server.tls.key_file"),
        ("cert.pem", "garbage.pem", "server.tls.key_file"),
        ("cert.pem", "other.key", "does not match"),
    ];
    for (i, (cert, key, want)) in cases.iter().enumerate() {
        let dir = d.path().join(format!("case{i}"));
        std::fs::create_dir(&dir).unwrap();
        let tls = TlsConfig {
            cert_file: d.path().join(cert),
            key_file: d.path().join(key),
            client_ca_file: None,
        };
        let e = start(&dir, tls)
            .await
            .err()
            .expect("started with a bad TLS file");
        assert_eq!(e.kind(), ErrorKind::Config, "{e}");
        assert!(e.to_string().contains(want), "{want}: {e}");
        assert!(!e.to_string().contains("PRIVATE KEY"), "{e}");
    }
}
