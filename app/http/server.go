// Package http serves one tenant's StageSub application: server-rendered
// HTML pages for orchestra staff (sessions, CSRF tokens on every form), the
// musician's answer page (no login, random link token), the JSON API under
// /api/v1 (bearer tokens), /healthz and /metrics.
//
// Every request passes the tenant guard first: a request whose
// X-StageSub-Tenant header, or whose Host <slug>.<base domain>, names another
// tenant gets 421 Misdirected Request.
package http

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/time/rate"

	"stagesub.dev/app"
	"stagesub.dev/app/loginlimit"
)

// Header names set by the router.
const (
	HeaderTenant         = "X-StageSub-Tenant"
	HeaderRequestID      = "X-Request-Id"
	HeaderForwardedProto = "X-Forwarded-Proto"
	HeaderForwardedHost  = "X-Forwarded-Host"
)

// Body limits: larger bodies get 413.
const (
	MaxFormBytes = 64 << 10
	MaxJSONBytes = 256 << 10
)

// Config wires a Server. Tenant and every service are required.
type Config struct {
	Tenant     string // the one tenant this process serves
	BaseDomain string // e.g. "stagesub.com" or "localhost"; "" disables the Host check
	Logger     *slog.Logger

	Users     app.UserService
	Musicians app.MusicianService
	Projects  app.ProjectService
	Requests  app.RequestService
	Dashboard app.DashboardService

	// Ping checks the database for /healthz.
	Ping          func(context.Context) error
	HealthTimeout time.Duration // default 1s

	// Registerer receives the HTTP metrics (wrap it with the tenant label);
	// Gatherer serves /metrics. Both nil: no metrics.
	Registerer prometheus.Registerer
	Gatherer   prometheus.Gatherer

	SessionTTL time.Duration // default 12h

	// TrustedProxies are the peers (the routers) whose X-Forwarded-For
	// names the client for the password-attempt limit; nil means loopback.
	TrustedProxies []netip.Prefix
	// LoginRate and LoginBurst limit wrong password attempts per client
	// (default DefaultLoginRate, DefaultLoginBurst); over all clients the
	// limit is 1/s with a burst of 30.
	LoginRate  rate.Limit
	LoginBurst int
}

// Server is the tenant's HTTP handler. It is safe for concurrent use.
type Server struct {
	cfg     Config
	log     *slog.Logger
	mux     *http.ServeMux
	handler http.Handler
	pages   *pages
	metrics *httpMetrics
	limit   *loginlimit.Limiter
}

// NewServer builds the handler with every route.
func NewServer(cfg Config) (*Server, error) {
	if cfg.Tenant == "" || cfg.Users == nil || cfg.Musicians == nil || cfg.Projects == nil || cfg.Requests == nil || cfg.Dashboard == nil || cfg.Ping == nil {
		return nil, errors.New("http: NewServer: tenant, services and Ping are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.HealthTimeout == 0 {
		cfg.HealthTimeout = time.Second
	}
	if cfg.SessionTTL == 0 {
		cfg.SessionTTL = 12 * time.Hour
	}
	if cfg.TrustedProxies == nil {
		cfg.TrustedProxies = loginlimit.DefaultTrustedProxies()
	}
	if cfg.LoginRate == 0 {
		cfg.LoginRate = DefaultLoginRate
	}
	if cfg.LoginBurst == 0 {
		cfg.LoginBurst = DefaultLoginBurst
	}
	cfg.BaseDomain = normalizeHost(cfg.BaseDomain)
	p, err := parsePages()
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger, mux: http.NewServeMux(), pages: p,
		limit: loginlimit.New(cfg.LoginRate, cfg.LoginBurst, loginlimit.DefaultGlobalRate, loginlimit.DefaultGlobalBurst)}
	if cfg.Registerer != nil {
		if s.metrics, err = newHTTPMetrics(cfg.Registerer); err != nil {
			return nil, err
		}
	}
	s.routes()
	s.handler = s.withMetrics(s.withRecover(s.withTenantGuard(s.mux)))
	return s, nil
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

func (s *Server) routes() {
	m := s.mux
	m.HandleFunc("GET /healthz", s.handleHealth)
	if s.cfg.Gatherer != nil {
		m.Handle("GET /metrics", promhttp.HandlerFor(s.cfg.Gatherer, promhttp.HandlerOpts{}))
	}
	m.HandleFunc("GET /static/style.css", handleCSS)
	m.HandleFunc("GET /favicon.ico", handleFavicon)

	// HTML for staff.
	m.HandleFunc("GET /login", s.anon(s.handleLoginForm))
	m.HandleFunc("POST /login", s.anon(s.handleLogin))
	m.HandleFunc("POST /logout", s.page(s.handleLogout))
	m.HandleFunc("GET /{$}", s.page(s.handleDashboard))
	m.HandleFunc("GET /musicians", s.page(s.handleMusicians))
	m.HandleFunc("GET /musicians/new", s.page(s.handleMusicianNew))
	m.HandleFunc("POST /musicians", s.page(s.handleMusicianCreate))
	m.HandleFunc("GET /musicians/{id}", s.page(s.handleMusicianEdit))
	m.HandleFunc("POST /musicians/{id}", s.page(s.handleMusicianUpdate))
	m.HandleFunc("POST /musicians/{id}/deactivate", s.page(s.handleMusicianDeactivate))
	m.HandleFunc("GET /projects", s.page(s.handleProjects))
	m.HandleFunc("GET /projects/new", s.page(s.handleProjectNew))
	m.HandleFunc("POST /projects", s.page(s.handleProjectCreate))
	m.HandleFunc("GET /projects/{id}", s.page(s.handleProject))
	m.HandleFunc("GET /projects/{id}/edit", s.page(s.handleProjectEdit))
	m.HandleFunc("POST /projects/{id}", s.page(s.handleProjectUpdate))
	m.HandleFunc("POST /projects/{id}/requests", s.page(s.handleRequestCreate))
	m.HandleFunc("POST /requests/{id}/cancel", s.page(s.handleRequestCancel))
	m.HandleFunc("GET /account", s.page(s.handleAccount))
	m.HandleFunc("POST /account/tokens", s.page(s.handleTokenCreate))
	m.HandleFunc("POST /account/password", s.page(s.handlePasswordChange))
	m.HandleFunc("GET /users", s.page(s.handleUsers))
	m.HandleFunc("POST /users", s.page(s.handleUserCreate))

	// The musician's answer page: no login, the token is the credential.
	m.HandleFunc("GET /r/{token}", s.anon(s.handleAnswerForm))
	m.HandleFunc("POST /r/{token}", s.anon(s.handleAnswer))

	// JSON API.
	m.HandleFunc("GET /api/v1/me", s.api(s.apiMe))
	m.HandleFunc("GET /api/v1/musicians", s.api(s.apiMusicians))
	m.HandleFunc("POST /api/v1/musicians", s.api(s.apiMusicianCreate))
	m.HandleFunc("GET /api/v1/musicians/{id}", s.api(s.apiMusician))
	m.HandleFunc("PUT /api/v1/musicians/{id}", s.api(s.apiMusicianUpdate))
	m.HandleFunc("DELETE /api/v1/musicians/{id}", s.api(s.apiMusicianDeactivate))
	m.HandleFunc("GET /api/v1/projects", s.api(s.apiProjects))
	m.HandleFunc("POST /api/v1/projects", s.api(s.apiProjectCreate))
	m.HandleFunc("GET /api/v1/projects/{id}", s.api(s.apiProject))
	m.HandleFunc("PUT /api/v1/projects/{id}", s.api(s.apiProjectUpdate))
	m.HandleFunc("GET /api/v1/requests", s.api(s.apiRequests))
	m.HandleFunc("POST /api/v1/requests", s.api(s.apiRequestCreate))
	m.HandleFunc("GET /api/v1/requests/{id}", s.api(s.apiRequest))
	m.HandleFunc("POST /api/v1/requests/{id}/cancel", s.api(s.apiRequestCancel))
	m.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeJSONError(w, http.StatusNotFound, app.ENOTFOUND, "No such API endpoint.", nil)
	})

	m.HandleFunc("/", s.handleNotFound)
}

// handleHealth answers 200 when the database answers within HealthTimeout,
// else 503, so Consul marks the instance critical; it recovers by itself.
func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.HealthTimeout)
	defer cancel()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err := s.cfg.Ping(ctx); err != nil {
		s.log.Warn("health check: database unreachable", "err", err)
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "database unreachable")
		return
	}
	fmt.Fprintln(w, "ok")
}

// withRecover turns a panic into a 500 and logs it.
func (s *Server) withRecover(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log.Error("panic in handler", "panic", v, "path", r.URL.Path, "request_id", r.Header.Get(HeaderRequestID))
				http.Error(w, "Internal error.", http.StatusInternalServerError)
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// withTenantGuard answers 421 when the request names another tenant in
// X-StageSub-Tenant or in its Host (<slug>.<base>). Other hosts (the
// tenant's own, custom domains, IPs, localhost) pass.
func (s *Server) withTenantGuard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if other := s.otherTenant(r); other != "" {
			s.log.Warn("misdirected request", "for", other, "tenant", s.cfg.Tenant, "host", r.Host, "request_id", r.Header.Get(HeaderRequestID))
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusMisdirectedRequest)
			fmt.Fprintf(w, "This server serves tenant %q only.\n", s.cfg.Tenant)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// otherTenant returns what r names instead of this tenant, or "".
func (s *Server) otherTenant(r *http.Request) string {
	if vs := r.Header.Values(HeaderTenant); len(vs) > 0 {
		for _, v := range vs {
			if strings.TrimSpace(v) != s.cfg.Tenant {
				return "tenant " + v
			}
		}
	}
	if s.cfg.BaseDomain == "" {
		return ""
	}
	host := normalizeHost(r.Host)
	if label, ok := strings.CutSuffix(host, "."+s.cfg.BaseDomain); ok && label != s.cfg.Tenant {
		return "host " + host
	}
	return ""
}

// normalizeHost lowercases h and strips a port and a trailing dot.
func normalizeHost(h string) string {
	h = strings.ToLower(strings.TrimSpace(h))
	if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	}
	return strings.TrimSuffix(h, ".")
}

// isHTTPS reports whether the client used https (directly or at the router).
func isHTTPS(r *http.Request) bool {
	return r.TLS != nil || strings.EqualFold(r.Header.Get(HeaderForwardedProto), "https")
}

// baseURL returns the scheme and host the client used.
func baseURL(r *http.Request) string {
	scheme := "http"
	if isHTTPS(r) {
		scheme = "https"
	}
	host := r.Header.Get(HeaderForwardedHost)
	if host == "" {
		host = r.Host
	}
	return scheme + "://" + host
}

// pathID parses the {id} wildcard; invalid ids are ENOTFOUND.
func pathID(r *http.Request) (int64, error) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		return 0, app.Errorf(app.ENOTFOUND, "Not found.")
	}
	return id, nil
}

// limitBody caps r.Body at n bytes; it reports false (after answering 413)
// when Content-Length already exceeds n.
func limitBody(w http.ResponseWriter, r *http.Request, n int64) bool {
	if r.ContentLength > n {
		return false
	}
	r.Body = http.MaxBytesReader(w, r.Body, n)
	return true
}

func isTooLarge(err error) bool {
	var mbe *http.MaxBytesError
	return errors.As(err, &mbe)
}

// statusOf maps an app error code to an HTTP status.
func statusOf(err error) int {
	switch app.ErrorCode(err) {
	case app.EINVALID:
		return http.StatusUnprocessableEntity
	case app.ENOTFOUND:
		return http.StatusNotFound
	case app.ECONFLICT:
		return http.StatusConflict
	case app.EUNAUTHORIZED:
		return http.StatusUnauthorized
	case app.EFORBIDDEN:
		return http.StatusForbidden
	}
	return http.StatusInternalServerError
}

// logError logs internal errors (others are the user's doing).
func (s *Server) logError(r *http.Request, err error) {
	if app.ErrorCode(err) == app.EINTERNAL && !errors.Is(err, context.Canceled) {
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err, "request_id", r.Header.Get(HeaderRequestID))
	}
}
