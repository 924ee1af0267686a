//! Captchas: the widget in the visitor's page puts a token in a field of the post, and the provider's
//! verify endpoint says whether it was solved (Cloudflare Turnstile and hCaptcha answer alike).

use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::secret::Secret;

/// How long the verify endpoint may take.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// Which captcha.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptchaProvider {
    /// Cloudflare Turnstile.
    Turnstile,
    /// hCaptcha.
    Hcaptcha,
}

impl CaptchaProvider {
    /// `turnstile` or `hcaptcha`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "turnstile" => Some(Self::Turnstile),
            "hcaptcha" => Some(Self::Hcaptcha),
            _ => None,
        }
    }

    /// The field the widget fills with its token.
    pub fn field(self) -> &'static str {
        match self {
            Self::Turnstile => "cf-turnstile-response",
            Self::Hcaptcha => "h-captcha-response",
        }
    }

    /// The provider's verify endpoint.
    pub fn verify_url(self) -> &'static str {
        match self {
            Self::Turnstile => "https://challenges.cloudflare.com/turnstile/v0/siteverify",
            Self::Hcaptcha => "https://api.hcaptcha.com/siteverify",
        }
    }
}

/// A form's captcha.
#[derive(Debug, Clone)]
pub struct Captcha {
    /// Which one.
    pub provider: CaptchaProvider,
    /// The site's secret key.
    pub secret: Secret,
    /// Where tokens are verified.
    pub verify_url: String,
}

/// Why a captcha did not pass.
#[derive(Debug, thiserror::Error)]
pub enum CaptchaError {
    /// The post carried no token.
    #[error("the captcha was not solved")]
    Missing,
    /// The provider said no.
    #[error("the captcha was not solved")]
    Failed,
    /// The provider could not be asked.
    #[error("the captcha could not be checked; try again in a moment")]
    Unavailable,
}

#[derive(Deserialize)]
struct Verdict {
    success: bool,
}

impl Captcha {
    /// Asks the provider whether `token` was solved by a visitor at `remote`.
    pub async fn verify(
        &self,
        client: &reqwest::Client,
        token: Option<&str>,
        remote: Option<IpAddr>,
    ) -> Result<(), CaptchaError> {
        let token = token
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or(CaptchaError::Missing)?;
        let remote = remote.map(|ip| ip.to_string());
        let mut form = vec![("secret", self.secret.expose()), ("response", token)];
        if let Some(remote) = &remote {
            form.push(("remoteip", remote));
        }
        let response = client
            .post(&self.verify_url)
            .timeout(VERIFY_TIMEOUT)
            .form(&form)
            .send()
            .await
            .map_err(|error| {
                tracing::warn!(error = %error.without_url(), "the captcha provider could not be reached");
                CaptchaError::Unavailable
            })?;
        if !response.status().is_success() {
            tracing::warn!(status = %response.status(), "the captcha provider refused the check");
            return Err(CaptchaError::Unavailable);
        }
        let verdict: Verdict = response
            .json()
            .await
            .map_err(|_| CaptchaError::Unavailable)?;
        if verdict.success {
            Ok(())
        } else {
            Err(CaptchaError::Failed)
        }
    }
}
