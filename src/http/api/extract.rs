//! Extractors of the JSON API: the admin bearer token, and JSON, query and
//! path input whose rejections are JSON errors like every other answer.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use std::time::Instant;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::error::AppError;
use crate::http::admin::FAILURE_WINDOW;
use crate::http::{AppState, ClientAddr};

/// A request that carries `Authorization: Bearer <admin token>`.
#[derive(Debug, Clone, Copy)]
pub struct AdminBearer;

fn unauthorized(message: &str) -> Response {
    let mut response =
        AppError::client(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"salestrack\""),
    );
    response
}

/// The token of an `Authorization` header whose scheme is `Bearer`
/// (the scheme is case-insensitive, RFC 7235).
fn bearer_token(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

impl FromRequestParts<AppState> for AdminBearer {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Ok(ClientAddr(ip)) = ClientAddr::from_request_parts(parts, state).await;
        let Some(token) = bearer_token(parts) else {
            return Err(unauthorized(
                "send the admin token as `Authorization: Bearer <token>`",
            ));
        };
        // Wrong tokens count with failed logins. While the address is
        // limited the token is still checked (cheap, constant time, and a
        // random token gives a guesser nothing to go on): the right one is
        // let in, a wrong one gets 429 and counts again.
        let now = Instant::now();
        let limited = state.failed_logins.is_blocked(ip, now);
        match state.tracker.check_admin_token(token).await {
            Ok(true) => {
                state.failed_logins.clear(ip);
                Ok(AdminBearer)
            }
            Ok(false) if limited => {
                state.failed_logins.record_failure(ip, now);
                tracing::warn!(?ip, "JSON API call rate-limited after wrong admin tokens");
                let mut response = AppError::client(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "too many wrong admin tokens from this address; wait five minutes",
                )
                .into_response();
                response.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(FAILURE_WINDOW.as_secs()),
                );
                Err(response)
            }
            Ok(false) => {
                state.failed_logins.record_failure(ip, now);
                tracing::warn!(?ip, "JSON API call with a wrong admin token");
                Err(unauthorized("the admin token is not valid"))
            }
            Err(e) => Err(AppError::from(e).into_response()),
        }
    }
}

fn invalid(message: impl Into<String>) -> AppError {
    AppError::client(StatusCode::BAD_REQUEST, "invalid_request", message)
}

/// A JSON body; any rejection becomes a JSON error (400 `invalid_request`,
/// or 415 when the body is not declared as JSON).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(AppError::client(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with `Content-Type: application/json`",
            )),
            Err(JsonRejection::JsonDataError(e)) => Err(invalid(format!(
                "the JSON body does not fit: {}",
                e.body_text()
            ))),
            Err(JsonRejection::JsonSyntaxError(e)) => Err(invalid(format!(
                "the body is not valid JSON: {}",
                e.body_text()
            ))),
            Err(other) => Err(AppError::client(
                other.status(),
                "invalid_request",
                other.body_text(),
            )),
        }
    }
}

/// Parses an optional JSON body: empty means `T::default()`.
pub fn optional_json<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, AppError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| invalid(format!("the body is not valid: {e}")))
}

/// Query parameters; a rejection becomes 400 `invalid_request`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|e: QueryRejection| {
                invalid(format!("bad query parameters: {}", e.body_text()))
            })
    }
}

/// Path parameters; a rejection becomes a JSON error.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Self(p.0))
            .map_err(|e: PathRejection| {
                AppError::client(e.status(), "invalid_request", e.body_text())
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(auth: Option<&str>) -> Parts {
        let mut builder = axum::http::Request::builder();
        if let Some(a) = auth {
            builder = builder.header(header::AUTHORIZATION, a);
        }
        builder.body(()).expect("request").into_parts().0
    }

    #[test]
    fn bearer_tokens_are_read_from_the_authorization_header() {
        assert_eq!(bearer_token(&parts(Some("Bearer abc"))), Some("abc"));
        assert_eq!(bearer_token(&parts(Some("bearer  abc "))), Some("abc"));
        assert_eq!(bearer_token(&parts(Some("Basic abc"))), None);
        assert_eq!(bearer_token(&parts(Some("Bearer "))), None);
        assert_eq!(bearer_token(&parts(None)), None);
    }
}
