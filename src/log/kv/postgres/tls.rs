//! How a `postgres://` URL is reached: the connection settings tokio-postgres reads, and TLS
//! with the `sslmode` meanings an operator knows from libpq and `psql`.
//!
//! tokio-postgres itself knows only `disable`, `prefer` and `require`, and leaves checking the
//! server's certificate to the TLS connector. The libpq parameters it does not know
//! (`sslrootcert`, `sslcert`, `sslkey`, and the `verify-ca` / `verify-full` modes) are taken
//! out of the URL here and turned into a rustls configuration:
//!
//! | `sslmode` | encrypted | server certificate checked |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (the default, as in libpq) | if the server offers it | no (yes, to the CA, with `sslrootcert`) |
//! | `require` | always | no (yes, to the CA, with `sslrootcert`) |
//! | `verify-ca` | always | signed by a trusted CA |
//! | `verify-full` | always | signed by a trusted CA, for the host name in the URL |
//!
//! The trusted CAs are the PEM file `sslrootcert=PATH`, or the platform's roots with
//! `sslrootcert=system` or when `verify-*` names no file. `sslcert=PATH` and `sslkey=PATH` give
//! a client certificate (for `cert` authentication in `pg_hba.conf`). Unix-domain sockets never
//! use TLS.
//!
//! Where this differs from libpq: `~/.postgresql/root.crt` and `postgresql.crt` are not read
//! unless named; `prefer` does not retry without TLS after a failed handshake (only when the
//! server offers no TLS at all); `sslrootcert=system` is taken with `require` and `verify-ca`
//! too (libpq 16 asks for `verify-full`); and certificates are checked by webpki, which
//! refuses a self-signed CA certificate used as the server's own (make the server's
//! certificate with a CA, as `tests/store_postgres_tls.rs` does).

use std::str::FromStr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// A parsed `postgres://` URL: what tokio-postgres connects with, and the TLS connector
/// (`None` with `sslmode=disable`).
#[derive(Clone)]
pub(crate) struct Target {
    pub config: tokio_postgres::Config,
    pub tls: Option<MakeRustlsConnect>,
}

/// How the server's certificate is checked.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Check {
    /// Encrypted, but any certificate is taken (libpq's `prefer` and `require`).
    Nothing,
    /// Signed by a trusted CA, whatever name it is for.
    Ca,
    /// Signed by a trusted CA and valid for the host connected to.
    Full,
}

/// Parses `url` (a `postgres://` or `postgresql://` URL, or libpq's `key=value` form) into a
/// [`Target`]; reads the certificate files it names. The error names what is wrong, without
/// the password.
pub(crate) fn parse(url: &str) -> Result<Target, String> {
    let (rest, ssl) = split_ssl_params(url)?;
    let mut config = tokio_postgres::Config::from_str(&rest).map_err(|e| e.to_string())?;
    let mode = ssl.mode.as_deref().unwrap_or("prefer");
    let (ssl_mode, check) = match mode {
        "disable" => (SslMode::Disable, Check::Nothing),
        "prefer" | "require" => {
            let m = if mode == "prefer" {
                SslMode::Prefer
            } else {
                SslMode::Require
            };
            // As libpq: with a root certificate named, require and prefer check the CA.
            if ssl.rootcert.is_some() {
                (m, Check::Ca)
            } else {
                (m, Check::Nothing)
            }
        }
        "verify-ca" => (SslMode::Require, Check::Ca),
        "verify-full" => (SslMode::Require, Check::Full),
        "allow" => {
            return Err(
                "sslmode=allow is not supported (it tries without TLS first); use \
                 sslmode=prefer, require, verify-ca or verify-full"
                    .into(),
            )
        }
        other => {
            return Err(format!(
                "sslmode={other:?} is not one of disable, prefer, require, verify-ca, verify-full"
            ))
        }
    };
    config.ssl_mode(ssl_mode);
    // TLS is never used over Unix-domain sockets (as libpq); tokio-postgres would hand the
    // connector an empty host name, which no certificate check accepts.
    let all_sockets = !config.get_hosts().is_empty()
        && config
            .get_hosts()
            .iter()
            .all(|h| matches!(h, tokio_postgres::config::Host::Unix(_)));
    if ssl_mode == SslMode::Disable || all_sockets {
        config.ssl_mode(SslMode::Disable);
        return Ok(Target { config, tls: None });
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let verifier: Arc<dyn ServerCertVerifier> = match check {
        Check::Nothing => Arc::new(AnyCertificate(provider)),
        Check::Ca | Check::Full => {
            let roots = Arc::new(roots(ssl.rootcert.as_deref())?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| format!("sslrootcert: {e}"))?;
            if check == Check::Full {
                webpki
            } else {
                Arc::new(AnyName(webpki))
            }
        }
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let client = match (&ssl.cert, &ssl.key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("sslcert={cert}: {e}"))?;
            if chain.is_empty() {
                return Err(format!("sslcert={cert}: no certificate in the file"));
            }
            let key_der =
                PrivateKeyDer::from_pem_file(key).map_err(|e| format!("sslkey={key}: {e}"))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| format!("sslcert/sslkey: {e}"))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err("sslcert and sslkey go together: name both files or neither".into()),
    };
    Ok(Target {
        config,
        tls: Some(MakeRustlsConnect::new(client)),
    })
}

/// The libpq TLS parameters taken out of a URL.
#[derive(Default, Debug, PartialEq)]
struct SslParams {
    mode: Option<String>,
    rootcert: Option<String>,
    cert: Option<String>,
    key: Option<String>,
}

/// Splits the TLS parameters from the rest of `url`, which tokio-postgres parses.
fn split_ssl_params(url: &str) -> Result<(String, SslParams), String> {
    let mut ssl = SslParams::default();
    let mut take = |k: &str, v: String| -> bool {
        let slot = match k {
            "sslmode" => &mut ssl.mode,
            "sslrootcert" => &mut ssl.rootcert,
            "sslcert" => &mut ssl.cert,
            "sslkey" => &mut ssl.key,
            _ => return false,
        };
        *slot = Some(v);
        true
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return Ok((url.to_string(), ssl));
        };
        // The other parameters stay exactly as written (tokio-postgres percent-decodes them;
        // `+` is a plus sign there, not a space).
        let mut kept = Vec::new();
        for part in query.split('&') {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            if !take(&percent_decoded(k), percent_decoded(v)) {
                kept.push(part);
            }
        }
        Ok((
            if kept.is_empty() {
                base.to_string()
            } else {
                format!("{base}?{}", kept.join("&"))
            },
            ssl,
        ))
    } else {
        // The key=value form, split at whitespace: no value may hold a space here, quoted or
        // not (use the URL form for such values).
        let mut kept = Vec::new();
        for part in url.split_whitespace() {
            match part.split_once('=') {
                Some((k, v)) if take(k, v.trim_matches('\'').to_string()) => {}
                _ => kept.push(part),
            }
        }
        Ok((kept.join(" "), ssl))
    }
}

/// `%XX` sequences decoded (a `+` stays a `+`, as tokio-postgres reads URLs).
fn percent_decoded(s: &str) -> String {
    let plus_kept = s.replace('+', "%2B");
    form_urlencoded::parse(format!("v={plus_kept}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// The CAs a server's certificate must chain to.
fn roots(rootcert: Option<&str>) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    match rootcert {
        None | Some("system") => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // A platform root rustls cannot read is left out, as tonic and curl do.
                let _ = store.add(cert);
            }
            if store.is_empty() {
                return Err(
                    "no platform root certificates found; name the server's CA with \
                     sslrootcert=PATH"
                        .into(),
                );
            }
        }
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("sslrootcert={path}: {e}"))?;
            let (added, _) = store.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!(
                    "sslrootcert={path}: no usable certificate in the file"
                ));
            }
        }
    }
    Ok(store)
}

/// Takes any server certificate, and still checks that the server holds its key (the
/// handshake signatures): libpq's `prefer` and `require` without a root certificate.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The CA check of webpki without the name check: libpq's `verify-ca`.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssl_parameters_leave_the_url_and_the_rest_stays() {
        let (rest, ssl) = split_ssl_params(
            "postgres://u:p@h:5/db?sslmode=verify-full&application_name=x&sslrootcert=%2Fca.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u:p@h:5/db?application_name=x");
        assert_eq!(ssl.mode.as_deref(), Some("verify-full"));
        assert_eq!(ssl.rootcert.as_deref(), Some("/ca.pem"));
        let (rest, ssl) = split_ssl_params("postgres://h/db?sslmode=disable").unwrap();
        assert_eq!(rest, "postgres://h/db");
        assert_eq!(ssl.mode.as_deref(), Some("disable"));
        let (rest, ssl) =
            split_ssl_params("host=h dbname=d sslmode=require sslcert=/c sslkey=/k").unwrap();
        assert_eq!(rest, "host=h dbname=d");
        assert_eq!(
            (ssl.cert.as_deref(), ssl.key.as_deref()),
            (Some("/c"), Some("/k"))
        );
    }

    #[test]
    fn modes_libpq_has_and_we_do_not_are_refused_clearly() {
        let e = parse("postgres://h/db?sslmode=allow").err().unwrap();
        assert!(e.contains("sslmode=allow is not supported"), "{e}");
        let e = parse("postgres://h/db?sslmode=verify").err().unwrap();
        assert!(e.contains("is not one of"), "{e}");
        let e = parse("postgres://h/db?sslcert=/c").err().unwrap();
        assert!(e.contains("go together"), "{e}");
        let e = parse("postgres://h/db?sslmode=verify-ca&sslrootcert=/no/such/file")
            .err()
            .unwrap();
        assert!(e.contains("sslrootcert=/no/such/file"), "{e}");
    }

    #[test]
    fn the_default_is_prefer_and_disable_has_no_connector() {
        let t = parse("postgres://h/db").unwrap();
        assert_eq!(t.config.get_ssl_mode(), SslMode::Prefer);
        assert!(t.tls.is_some());
        let t = parse("postgres://h/db?sslmode=disable").unwrap();
        assert_eq!(t.config.get_ssl_mode(), SslMode::Disable);
        assert!(t.tls.is_none());
    }

    #[test]
    fn passwords_are_hidden_wherever_they_are_written() {
        use super::super::redact;
        assert_eq!(
            redact("postgres://u:secret@h:5/db"),
            "postgres://u:***@h:5/db"
        );
        assert_eq!(
            redact("postgres://u@h/db?password=secret&sslmode=require"),
            "postgres://u@h/db?password=***&sslmode=require"
        );
        assert_eq!(
            redact("host=h password=secret dbname=d"),
            "host=h password=*** dbname=d"
        );
        assert_eq!(
            redact("host=h password = secret dbname=d"),
            "host=h password=*** dbname=d"
        );
        assert_eq!(
            redact("host = h  password='se cret \\' x' dbname=d"),
            "host=h password=*** dbname=d"
        );
        assert_eq!(redact("password=se\\ cret host=h"), "password=*** host=h");
        assert!(!redact("host=h password='secret").contains("secret"));
        assert!(!redact("host=h password secret").contains("secret"));
        assert_eq!(redact("host=h dbname"), "host=h dbname");
        assert_eq!(redact("postgres://u:se/cret@h/db"), "postgres://u:***@h/db");
        // Only `postgres://` and `postgresql://` make a URL; a `?` or `://` elsewhere does not.
        assert_eq!(redact("host=h password=se?cret"), "host=h password=***");
        assert_eq!(
            redact("application_name=why? password=secret"),
            "application_name=why? password=***"
        );
        assert_eq!(
            redact("password=secret application_name=https://x"),
            "password=*** application_name=https://x"
        );
        assert_eq!(
            redact("postgresql://u:secret@h/db"),
            "postgresql://u:***@h/db"
        );
        // A URL's password holding `?` or `@`, and a percent-encoded parameter name.
        assert_eq!(redact("postgres://u:se?cret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u:p@ss@h/db"), "postgres://u:***@h/db");
        assert_eq!(
            redact("postgres://h/db?pass%77ord=secret"),
            "postgres://h/db?password=***"
        );
        assert_eq!(
            redact("postgres://h/db?application_name=a@b"),
            "postgres://h/db?application_name=a@b"
        );
    }

    #[test]
    fn other_parameters_pass_through_as_written() {
        let (rest, ssl) = split_ssl_params(
            "postgres://h/db?options=-c%20statement_timeout%3D5s&sslrootcert=%2Fetc%2Fc++.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgres://h/db?options=-c%20statement_timeout%3D5s");
        assert_eq!(ssl.rootcert.as_deref(), Some("/etc/c++.pem"));
    }

    #[test]
    fn unix_sockets_never_use_tls() {
        let t = parse("host=/var/run/postgresql dbname=d sslmode=require").unwrap();
        assert!(t.tls.is_none());
        assert_eq!(t.config.get_ssl_mode(), SslMode::Disable);
    }
}
