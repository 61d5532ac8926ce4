//! `POST /api/v1/autofix` and `GET /api/v1/diagnose`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;

use super::dto::{
    AutofixIn, AutofixOut, ConversionDetailOut, DiagnoseOut, ErrorOut, LinkDiagnosisOut,
};
use super::extract::{optional_json, AdminBearer, ApiQuery};
use crate::error::AppError;
use crate::http::AppState;

/// Run Auto-Fix over the orphans.
#[utoipa::path(
    post,
    path = "/api/v1/autofix",
    tag = "operations",
    security(("admin_token" = [])),
    request_body(content = Option<AutofixIn>, description = "Optional; an empty body fixes every client's orphans"),
    responses(
        (status = 200, description = "What the run did", body = AutofixOut),
        (status = 400, description = "The body is not valid", body = ErrorOut),
        (status = 401, description = "No or wrong admin token", body = ErrorOut),
        (status = 404, description = "No such client", body = ErrorOut),
    )
)]
pub async fn run_autofix(
    _auth: AdminBearer,
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<AutofixOut>, AppError> {
    let input: AutofixIn = optional_json(&body)?;
    let client = input.client.as_deref().filter(|c| !c.is_empty());
    let report = state.tracker.autofix(client).await?;
    Ok(Json(report.into()))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DiagnoseQuery {
    /// Diagnose every link with this slug.
    #[serde(alias = "linkSlug")]
    pub link_slug: Option<String>,
    /// Diagnose this sale (a conversion id).
    pub conversion: Option<String>,
}

/// Diagnose a link or a sale.
#[utoipa::path(
    get,
    path = "/api/v1/diagnose",
    tag = "operations",
    security(("admin_token" = [])),
    params(DiagnoseQuery),
    responses(
        (status = 200, description = "Clicks, conversions, nearby orphans with why they were not matched, events, and what to do next", body = DiagnoseOut),
        (status = 400, description = "Neither `link_slug` nor `conversion` given", body = ErrorOut),
        (status = 401, description = "No or wrong admin token", body = ErrorOut),
        (status = 404, description = "No such link or conversion", body = ErrorOut),
    )
)]
pub async fn diagnose(
    _auth: AdminBearer,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<DiagnoseQuery>,
) -> Result<Json<DiagnoseOut>, AppError> {
    let slug = q
        .link_slug
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let conversion = q
        .conversion
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    if slug.is_none() && conversion.is_none() {
        return Err(AppError::client(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "give `link_slug` or `conversion`",
        ));
    }
    let tracker = &state.tracker;
    let public_url = &tracker.config().public_url;
    let links = match slug {
        Some(s) => tracker
            .diagnose_link(s)
            .await?
            .iter()
            .map(|d| LinkDiagnosisOut::new(d, public_url))
            .collect(),
        None => Vec::new(),
    };
    let sale = match conversion {
        Some(id) => Some(ConversionDetailOut::new(
            &tracker.diagnose_conversion(id).await?,
            public_url,
        )),
        None => None,
    };
    Ok(Json(DiagnoseOut { links, sale }))
}
