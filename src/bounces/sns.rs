//! Amazon SNS messages (how SES publishes bounces and complaints): their signature is checked against
//! the certificate SNS names, fetched only from an allowed place, before anything in them is believed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use rsa::RsaPublicKey;
use rsa::pkcs1v15::Pkcs1v15Sign;
use rsa::pkcs8::DecodePublicKey;
use serde::Deserialize;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use x509_cert::Certificate;
use x509_cert::der::{DecodePem, Encode};

/// An SNS message as posted.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SnsMessage {
    /// `Notification`, `SubscriptionConfirmation` or `UnsubscribeConfirmation`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// SNS's id of the message.
    pub message_id: String,
    /// The subscription's token (confirmations).
    #[serde(default)]
    pub token: Option<String>,
    /// The topic.
    pub topic_arn: String,
    /// A notification's subject.
    #[serde(default)]
    pub subject: Option<String>,
    /// The payload: for SES, a JSON document.
    pub message: String,
    /// Where to confirm a subscription.
    #[serde(default, rename = "SubscribeURL")]
    pub subscribe_url: Option<String>,
    /// When it was published.
    pub timestamp: String,
    /// `1` (SHA1withRSA) or `2` (SHA256withRSA).
    pub signature_version: String,
    /// Base64 of the signature.
    pub signature: String,
    /// Where SNS's certificate is.
    #[serde(rename = "SigningCertURL")]
    pub signing_cert_url: String,
}

/// Why an SNS message is not believed.
#[derive(Debug, thiserror::Error)]
pub enum SnsError {
    /// The certificate URL is not an allowed place.
    #[error("the signing certificate URL is not allowed: {0}")]
    CertificateUrl(String),
    /// The certificate could not be fetched or read.
    #[error("the signing certificate could not be used: {0}")]
    Certificate(String),
    /// The signature version is unknown.
    #[error("unknown signature version `{0}`")]
    Version(String),
    /// The signature does not verify.
    #[error("the signature does not verify")]
    Signature,
}

/// Checks SNS signatures, with the certificates it has fetched kept.
pub struct SnsVerifier {
    /// URL prefixes certificates (and subscription confirmations) may come from; empty: SNS's own
    /// (`https://sns.<region>.amazonaws.com/`).
    allowed: Vec<String>,
    client: reqwest::Client,
    keys: Mutex<HashMap<String, RsaPublicKey>>,
}

impl SnsVerifier {
    /// A verifier taking certificates from `allowed` prefixes (SNS's own hosts when empty).
    pub fn new(allowed: Vec<String>) -> anyhow::Result<Self> {
        Ok(Self {
            allowed,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(10))
                .build()?,
            keys: Mutex::default(),
        })
    }

    /// Whether a URL is one SNS certificates and confirmations may come from.
    pub fn allows(&self, url: &str) -> bool {
        if !self.allowed.is_empty() {
            return self
                .allowed
                .iter()
                .any(|prefix| url.starts_with(prefix.as_str()));
        }
        let Ok(url) = url::Url::parse(url) else {
            return false;
        };
        let host = url.host_str().unwrap_or("");
        let region = host
            .strip_prefix("sns.")
            .and_then(|rest| {
                rest.strip_suffix(".amazonaws.com")
                    .or_else(|| rest.strip_suffix(".amazonaws.com.cn"))
            })
            .unwrap_or("");
        url.scheme() == "https"
            && !region.is_empty()
            && region
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
    }

    /// Checks the message's signature.
    pub async fn verify(&self, message: &SnsMessage) -> Result<(), SnsError> {
        if !self.allows(&message.signing_cert_url) {
            return Err(SnsError::CertificateUrl(message.signing_cert_url.clone()));
        }
        let key = self.key(&message.signing_cert_url).await?;
        let signature = base64::engine::general_purpose::STANDARD
            .decode(message.signature.trim())
            .map_err(|_| SnsError::Signature)?;
        let text = string_to_sign(message);
        let verified = match message.signature_version.as_str() {
            "1" => key.verify(
                Pkcs1v15Sign::new::<Sha1>(),
                &Sha1::digest(text.as_bytes()),
                &signature,
            ),
            "2" => key.verify(
                Pkcs1v15Sign::new::<Sha256>(),
                &Sha256::digest(text.as_bytes()),
                &signature,
            ),
            other => return Err(SnsError::Version(other.to_owned())),
        };
        verified.map_err(|_| SnsError::Signature)
    }

    async fn key(&self, url: &str) -> Result<RsaPublicKey, SnsError> {
        if let Some(key) = self
            .keys
            .lock()
            .ok()
            .and_then(|keys| keys.get(url).cloned())
        {
            return Ok(key);
        }
        let pem = self
            .client
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|error| SnsError::Certificate(error.to_string()))?
            .text()
            .await
            .map_err(|error| SnsError::Certificate(error.to_string()))?;
        let certificate = Certificate::from_pem(pem.as_bytes())
            .map_err(|error| SnsError::Certificate(error.to_string()))?;
        let der = certificate
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|error| SnsError::Certificate(error.to_string()))?;
        let key = RsaPublicKey::from_public_key_der(&der)
            .map_err(|error| SnsError::Certificate(error.to_string()))?;
        if let Ok(mut keys) = self.keys.lock() {
            keys.insert(url.to_owned(), key.clone());
        }
        Ok(key)
    }

    /// Confirms a subscription by fetching its `SubscribeURL` (from an allowed place only).
    pub async fn confirm(&self, message: &SnsMessage) -> Result<(), SnsError> {
        let url = message
            .subscribe_url
            .as_deref()
            .filter(|url| self.allows(url))
            .ok_or_else(|| {
                SnsError::CertificateUrl(message.subscribe_url.clone().unwrap_or_default())
            })?;
        self.client
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|error| SnsError::Certificate(error.to_string()))?;
        Ok(())
    }
}

/// The text SNS signs: `name\nvalue\n` for each field of the message's type, in order.
pub fn string_to_sign(message: &SnsMessage) -> String {
    let mut fields: Vec<(&str, Option<&str>)> = vec![
        ("Message", Some(&message.message)),
        ("MessageId", Some(&message.message_id)),
    ];
    if message.kind == "Notification" {
        fields.push(("Subject", message.subject.as_deref()));
    } else {
        fields.push(("SubscribeURL", message.subscribe_url.as_deref()));
    }
    fields.push(("Timestamp", Some(&message.timestamp)));
    if message.kind != "Notification" {
        fields.push(("Token", message.token.as_deref()));
    }
    fields.push(("TopicArn", Some(&message.topic_arn)));
    fields.push(("Type", Some(&message.kind)));
    let mut text = String::new();
    for (name, value) in fields {
        if let Some(value) = value {
            text.push_str(name);
            text.push('\n');
            text.push_str(value);
            text.push('\n');
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sns_hosts_are_allowed_by_default() {
        let verifier = SnsVerifier::new(Vec::new()).unwrap();
        assert!(
            verifier
                .allows("https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-abc.pem")
        );
        for bad in [
            "http://sns.eu-west-1.amazonaws.com/x.pem",
            "https://sns.eu-west-1.amazonaws.com.evil.example/x.pem",
            "https://evil.example/sns.eu-west-1.amazonaws.com/x.pem",
            "https://sns..amazonaws.com/x.pem",
        ] {
            assert!(!verifier.allows(bad), "{bad}");
        }
        let local = SnsVerifier::new(vec!["http://127.0.0.1:9/".into()]).unwrap();
        assert!(local.allows("http://127.0.0.1:9/cert.pem"));
        assert!(!local.allows("https://sns.eu-west-1.amazonaws.com/x.pem"));
    }
}
