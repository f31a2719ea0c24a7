//! Maps a method and path to an endpoint. The route set is closed, so the route label
//! of the HTTP metrics has a fixed, small set of values.

use hyper::Method;

use super::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Health,
    HealthLive,
    HealthReady,
    Metrics,
    MetricsPrometheus,
    Config,
    Relays,
    SyncStatus,
    SyncForce,
    Logs,
    OpenApi,
    AdminDrain,
    Dashboard,
    DashboardData,
}

impl Route {
    pub const ALL: [Route; 14] = [
        Route::Health,
        Route::HealthLive,
        Route::HealthReady,
        Route::Metrics,
        Route::MetricsPrometheus,
        Route::Config,
        Route::Relays,
        Route::SyncStatus,
        Route::SyncForce,
        Route::Logs,
        Route::OpenApi,
        Route::AdminDrain,
        Route::Dashboard,
        Route::DashboardData,
    ];

    /// The `route` label for requests that matched no endpoint.
    pub const UNMATCHED_LABEL: &'static str = "unmatched";

    pub fn path(self) -> &'static str {
        match self {
            Route::Health => "/health",
            Route::HealthLive => "/health/live",
            Route::HealthReady => "/health/ready",
            Route::Metrics => "/metrics",
            Route::MetricsPrometheus => "/metrics/prometheus",
            Route::Config => "/config",
            Route::Relays => "/relays",
            Route::SyncStatus => "/sync/status",
            Route::SyncForce => "/sync/force",
            Route::Logs => "/logs",
            Route::OpenApi => "/openapi.json",
            Route::AdminDrain => "/admin/drain",
            Route::Dashboard => "/dashboard",
            Route::DashboardData => "/dashboard/data",
        }
    }

    /// The `route` metric label.
    pub fn label(self) -> &'static str {
        match self {
            Route::Health => "health",
            Route::HealthLive => "health_live",
            Route::HealthReady => "health_ready",
            Route::Metrics => "metrics",
            Route::MetricsPrometheus => "metrics_prometheus",
            Route::Config => "config",
            Route::Relays => "relays",
            Route::SyncStatus => "sync_status",
            Route::SyncForce => "sync_force",
            Route::Logs => "logs",
            Route::OpenApi => "openapi",
            Route::AdminDrain => "admin_drain",
            Route::Dashboard => "dashboard",
            Route::DashboardData => "dashboard_data",
        }
    }

    fn method(self) -> Method {
        match self {
            Route::SyncForce | Route::AdminDrain => Method::POST,
            _ => Method::GET,
        }
    }

    /// The `Allow` header for this path.
    fn allow(self) -> &'static str {
        match self {
            Route::SyncForce | Route::AdminDrain => "POST",
            _ => "GET",
        }
    }

    /// Whether basic auth (when configured) guards it: everything but the probes.
    pub fn needs_auth(self) -> bool {
        !self.is_probe()
    }

    /// `/health`, `/health/live` and `/health/ready`: unauthenticated, answered while
    /// draining and over the connection caps.
    pub fn is_probe(self) -> bool {
        matches!(self, Route::Health | Route::HealthLive | Route::HealthReady)
    }
}

/// The endpoint at `path`, or `None` for an unknown path.
pub fn find(path: &str) -> Option<Route> {
    Route::ALL.into_iter().find(|route| route.path() == path)
}

/// # Errors
/// `MethodNotAllowed` when the path exists but not with this method.
pub fn check_method(route: Route, method: &Method) -> Result<(), ApiError> {
    if *method == route.method() {
        Ok(())
    } else {
        Err(ApiError::MethodNotAllowed {
            allow: route.allow(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_found_by_its_path_only() {
        for route in Route::ALL {
            assert_eq!(find(route.path()), Some(route));
        }
        assert_eq!(find("/health/"), None);
        assert_eq!(find("/health/live/"), None);
        assert!(Route::HealthReady.is_probe() && !Route::HealthReady.needs_auth());
        assert!(!Route::Metrics.is_probe());
        assert_eq!(find("/nope"), None);
        assert!(check_method(Route::SyncForce, &Method::GET).is_err());
        assert!(check_method(Route::Health, &Method::GET).is_ok());
        assert!(check_method(Route::Health, &Method::DELETE).is_err());
    }
}
