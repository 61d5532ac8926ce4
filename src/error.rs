//! One error type for the HTTP edge: client errors carry a safe message and
//! the right status; internal errors are logged once and answered opaquely.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::domain::DomainError;
use crate::storage::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{message}")]
    Client {
        status: StatusCode,
        code: &'static str,
        message: String,
    },
    #[error("the store is unavailable")]
    Unavailable(#[source] StoreError),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl AppError {
    pub fn client(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self::Client {
            status,
            code,
            message: message.into(),
        }
    }
}

impl From<DomainError> for AppError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::Invalid(m) => Self::client(StatusCode::BAD_REQUEST, "invalid_request", m),
            DomainError::NotFound { what, id } => Self::client(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("{what} not found: {id}"),
            ),
            DomainError::Conflict(m) => Self::client(StatusCode::CONFLICT, "conflict", m),
            DomainError::Store(s) => s.into(),
        }
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::client(StatusCode::NOT_FOUND, "not_found", "not found"),
            StoreError::Conflict(m) => Self::client(StatusCode::CONFLICT, "conflict", m),
            StoreError::Unavailable(_) => Self::Unavailable(e),
            other => Self::Internal(other.into()),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code, message) = match &self {
            Self::Client {
                status,
                code,
                message,
            } => (*status, *code, message.clone()),
            Self::Unavailable(e) => {
                tracing::error!(error = %e, "store unavailable");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the store is unavailable; retry later".to_string(),
                )
            }
            Self::Internal(e) => {
                tracing::error!(error = ?e, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error".to_string(),
                )
            }
        };
        (
            status,
            Json(json!({"error": {"code": code, "message": message}})),
        )
            .into_response()
    }
}
