//! Reading a JSON request body: content type first, size limit before buffering, a deadline for the
//! whole body, then parsing straight into the request's shape.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{HttpRequest, web};
use futures_util::StreamExt;
use serde::Deserializer;
use serde::de::{self, DeserializeOwned, MapAccess, Visitor};

use super::ApiError;

/// What a route reads.
#[derive(Debug, Clone, Copy)]
pub enum Media {
    /// `application/json` or `application/*+json`.
    Json,
    /// `message/rfc822`: a complete message.
    Message,
    /// Whatever the sender says (a provider's notification: SNS posts JSON as `text/plain`).
    Any,
    /// What an HTML form or a script posts: `application/x-www-form-urlencoded`,
    /// `multipart/form-data` or JSON.
    Form,
}

impl Media {
    fn accepts(self, essence: &str) -> bool {
        match self {
            Media::Json => {
                essence == "application/json"
                    || (essence.starts_with("application/") && essence.ends_with("+json"))
            }
            Media::Message => essence == "message/rfc822",
            Media::Any => true,
            Media::Form => {
                matches!(
                    essence,
                    "application/x-www-form-urlencoded" | "multipart/form-data"
                ) || Media::Json.accepts(essence)
            }
        }
    }
}

/// Reads the body, refusing anything not of `media`, larger than `limit`, or not arriving within
/// `timeout` (a client that stops sending part-way is answered 408, not waited for).
pub async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    media: Media,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, ApiError> {
    if !media.accepts(&essence(req)) {
        return Err(ApiError::UnsupportedMediaType(media));
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(8 * 1024).min(limit));
    loop {
        let chunk = match tokio::time::timeout_at(deadline, payload.next()).await {
            Ok(Some(chunk)) => chunk.map_err(|error| ApiError::MalformedJson(error.to_string()))?,
            Ok(None) => break,
            Err(_) => return Err(ApiError::RequestTimeout(timeout)),
        };
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Reads a JSON body within the listener's size and time limits.
pub async fn read_json(
    req: &HttpRequest,
    payload: web::Payload,
    http: &super::HttpSettings,
) -> Result<Bytes, ApiError> {
    read_body(
        req,
        payload,
        Media::Json,
        http.max_body_size,
        http.body_timeout,
    )
    .await
}

/// Parses a JSON object into `T`: a body that is not JSON is a 400, one of the wrong shape (not an
/// object, a field unknown, missing, mistyped or given twice) a 422 naming the field.
pub fn parse_object<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let object = body
        .iter()
        .find(|byte| !byte.is_ascii_whitespace())
        .is_some_and(|byte| *byte == b'{');
    if !object {
        // Anything but an object is refused, even where serde would read a struct from an array.
        return Err(match serde_json::from_slice::<de::IgnoredAny>(body) {
            Ok(_) => ApiError::InvalidRequest {
                message: "the body must be a JSON object".into(),
                field: None,
            },
            Err(error) => ApiError::MalformedJson(error.to_string()),
        });
    }
    serde_json::from_slice::<T>(body).map_err(|error| {
        if error.is_data() {
            shape_error(error)
        } else {
            ApiError::MalformedJson(error.to_string())
        }
    })
}

/// The request's media type without parameters, in lower case (empty without a `Content-Type`).
pub(super) fn essence(req: &HttpRequest) -> String {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Turns a serde error about the request's shape into a problem naming the field where possible.
fn shape_error(error: serde_json::Error) -> ApiError {
    let message = error.to_string();
    // serde names fields in backticks: "unknown field `foo`, expected ...", "missing field `from`",
    // "duplicate field `to`"; a map given one key twice says "duplicate key `X-A` in `headers`".
    let field = if message.starts_with("duplicate key") {
        message.split('`').nth(3)
    } else if ["unknown field", "missing field", "duplicate field"]
        .iter()
        .any(|prefix| message.starts_with(prefix))
    {
        message.split('`').nth(1)
    } else {
        None
    };
    ApiError::InvalidRequest {
        field: field.map(str::to_owned),
        message,
    }
}

/// Deserializes an optional JSON object of strings, refusing a key given twice: two parsers may
/// disagree on which of the two counts (`serde_json` alone keeps the last). `null` is no object.
pub fn unique_keys<'de, D>(
    deserializer: D,
    field: &'static str,
) -> Result<Option<BTreeMap<String, String>>, D::Error>
where
    D: Deserializer<'de>,
{
    struct Objects(&'static str);

    impl<'de> Visitor<'de> for Objects {
        type Value = Option<BTreeMap<String, String>>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object of strings")
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(
            self,
            deserializer: D,
        ) -> Result<Self::Value, D::Error> {
            deserializer.deserialize_map(self)
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((key, value)) = map.next_entry::<String, String>()? {
                if out.contains_key(&key) {
                    return Err(de::Error::custom(format_args!(
                        "duplicate key `{key}` in `{}`",
                        self.0
                    )));
                }
                out.insert(key, value);
            }
            Ok(Some(out))
        }
    }

    deserializer.deserialize_option(Objects(field))
}
