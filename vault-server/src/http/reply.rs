//! Answers in Vault's shape: the response envelope (`request_id`, `data`, `auth`, ...) and
//! errors as `{"errors": [...]}` with Vault's status codes.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use serde_json::{Value, json};
use tonic::{Code, Status};
use vault_proto::reason;

use crate::call::REQUEST_ID_HEADER;

/// A successful answer.
pub(crate) struct Answer {
    status: StatusCode,
    body: Option<Value>,
    request_id: String,
}

impl Answer {
    /// Vault's envelope with `data`.
    pub fn data(request_id: &str, data: Value) -> Answer {
        Answer::envelope(request_id, data, Value::Null)
    }

    /// Vault's envelope with an `auth` block (logins, token creation and renewal).
    pub fn auth(request_id: &str, auth: Value) -> Answer {
        Answer::envelope(request_id, Value::Null, auth)
    }

    fn envelope(request_id: &str, data: Value, auth: Value) -> Answer {
        Answer {
            status: StatusCode::OK,
            body: Some(json!({
                "request_id": request_id,
                "lease_id": "",
                "renewable": false,
                "lease_duration": 0,
                "data": data,
                "wrap_info": null,
                "warnings": null,
                "auth": auth,
            })),
            request_id: request_id.to_owned(),
        }
    }

    /// A body of its own, not the envelope (`sys/health`, `sys/seal-status`, `sys/init`).
    pub fn raw(request_id: &str, status: StatusCode, body: Value) -> Answer {
        Answer {
            status,
            body: Some(body),
            request_id: request_id.to_owned(),
        }
    }

    /// 204: done, nothing to say (Vault's answer to a seal, a revocation, a deletion).
    pub fn empty(request_id: &str) -> Answer {
        Answer {
            status: StatusCode::NO_CONTENT,
            body: None,
            request_id: request_id.to_owned(),
        }
    }

    /// Adds warnings to the envelope.
    pub fn warn(mut self, warnings: Vec<String>) -> Answer {
        if let Some(Value::Object(body)) = &mut self.body
            && !warnings.is_empty()
        {
            body.insert("warnings".into(), json!(warnings));
        }
        self
    }

    /// Adds top-level fields beside the envelope's (`sys/mounts` answers its table twice).
    pub fn merge(mut self, fields: serde_json::Map<String, Value>) -> Answer {
        if let Some(Value::Object(body)) = &mut self.body {
            for (key, value) in fields {
                body.entry(key).or_insert(value);
            }
        }
        self
    }

    /// The answer without its body, as HEAD gets it.
    pub fn headless(mut self) -> Answer {
        self.body = None;
        self
    }

    pub fn into_response(self) -> Response<Full<Bytes>> {
        let body = match &self.body {
            Some(value) => Bytes::from(serde_json::to_vec(value).unwrap_or_default()),
            None => Bytes::new(),
        };
        response(self.status, body, self.body.is_some(), &self.request_id)
    }
}

/// A LIST's answer: `keys`, or 404 when there are none, as Vault answers; a warning names the
/// next page's `after` when there is one.
pub(crate) fn listed(
    request_id: &str,
    keys: &[String],
    next_page: &str,
    none: &str,
) -> Result<Answer, Failure> {
    if keys.is_empty() {
        return Err(Failure::new(StatusCode::NOT_FOUND, none).with_request_id(request_id));
    }
    let answer = Answer::data(request_id, json!({ "keys": keys }));
    Ok(if next_page.is_empty() {
        answer
    } else {
        answer.warn(vec![format!(
            "more keys follow: list again with after={next_page}"
        )])
    })
}

/// An error answer: Vault's `{"errors": [...]}`.
pub(crate) struct Failure {
    status: StatusCode,
    message: String,
    request_id: String,
    /// The failure is a call's answer (which has its audit record).
    from_call: bool,
}

impl Failure {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Failure {
        Failure {
            status,
            message: message.into(),
            request_id: String::new(),
            from_call: false,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::BAD_REQUEST, message)
    }

    /// A field of the request that is missing or of the wrong type (named).
    pub fn field(name: &str, problem: impl std::fmt::Display) -> Failure {
        Failure::bad_request(format!("{name}: {problem}"))
    }

    pub fn internal() -> Failure {
        Failure::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error; see the server log",
        )
    }

    pub fn too_large() -> Failure {
        Failure::new(StatusCode::PAYLOAD_TOO_LARGE, "the request is too large")
    }

    /// The failure of the call with this request id (which recorded it), found in its answer.
    pub fn with_request_id(mut self, request_id: &str) -> Failure {
        request_id.clone_into(&mut self.request_id);
        self.from_call = true;
        self
    }

    /// The failure of a call, with Vault's status code for it.
    pub fn from_status(status: &Status, request_id: String) -> Failure {
        let why = status
            .metadata()
            .get(reason::METADATA_KEY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let code = super::http_status(status.code(), why);
        // Vault's clients look for these words (`vault status` tells a sealed HA node so).
        let message = if why == reason::SEALED {
            "Vault is sealed".to_owned()
        } else {
            status.message().to_owned()
        };
        Failure {
            status: code,
            message,
            request_id,
            from_call: true,
        }
    }

    /// The same failure in other words (its status and record kept).
    pub fn reworded(mut self, message: String) -> Failure {
        self.message = message;
        self
    }

    /// Whether this is a call's answer, recorded already.
    pub fn is_recorded(&self) -> bool {
        self.from_call
    }

    #[cfg(test)]
    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn message(&self) -> String {
        self.message.clone()
    }

    /// The gRPC code an audit record of this refusal carries.
    pub fn code(&self) -> Code {
        match self.status {
            StatusCode::BAD_REQUEST => Code::InvalidArgument,
            StatusCode::FORBIDDEN => Code::PermissionDenied,
            StatusCode::NOT_FOUND => Code::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => Code::Unimplemented,
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::TOO_MANY_REQUESTS => {
                Code::ResourceExhausted
            }
            StatusCode::REQUEST_TIMEOUT => Code::DeadlineExceeded,
            StatusCode::SERVICE_UNAVAILABLE => Code::Unavailable,
            _ => Code::Internal,
        }
    }

    pub fn into_response(self, request_id: &str) -> Response<Full<Bytes>> {
        let id = if self.request_id.is_empty() {
            request_id
        } else {
            &self.request_id
        };
        let body = json!({ "errors": [self.message] });
        response(
            self.status,
            Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
            true,
            id,
        )
    }
}

fn response(
    status: StatusCode,
    body: Bytes,
    json: bool,
    request_id: &str,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if json {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(value) = HeaderValue::from_str(request_id)
        && !request_id.is_empty()
    {
        headers.insert(REQUEST_ID_HEADER, value);
    }
    response
}
