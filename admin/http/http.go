// Package http serves the superadmin dashboard: the HTML page over the
// cached fleet report (sortable, filterable, with its freshness), the same
// data as JSON at /api/v1/stats, login and logout, /healthz and /metrics.
//
// Everything but /healthz and /metrics needs the superadmin: a session
// cookie (Secure, HttpOnly, SameSite=Strict, HMAC-signed, bound to the
// password hash) from the login form, or, for /api/v1/stats only, HTTP Basic
// auth. Forms carry CSRF tokens; login attempts are rate limited per client
// and overall. Pages never wait for a database: they render the cache.
package http

import (
	"bytes"
	"context"
	"crypto/subtle"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"stagesub.dev/admin"
	"stagesub.dev/admin/password"
	"stagesub.dev/app/loginlimit"
)

// Stats is what the handlers need from the report cache; *admin.Cache
// implements it.
type Stats interface {
	Get() *admin.Report
	Refresh(ctx context.Context) (*admin.Report, error)
	Refreshing() bool
	Interval() time.Duration
}

var _ Stats = (*admin.Cache)(nil)

// Options configure a Handler.
type Options struct {
	Stats        Stats
	User         string // superadmin user name, required
	PasswordHash string // argon2id or bcrypt hash, required
	// SessionKey signs sessions and CSRF tokens; at least 32 bytes. Replicas
	// behind one router must share it.
	SessionKey []byte
	SessionTTL time.Duration // default 12h
	// Metrics serves /metrics; nil answers 404. With MetricsToken set,
	// /metrics needs "Authorization: Bearer <token>".
	Metrics      http.Handler
	MetricsToken string
	// TrustedProxies are peers whose X-Forwarded-For is believed (the
	// router); default loopback.
	TrustedProxies []netip.Prefix
	// Login limits: per client LoginRate with burst LoginBurst (default one
	// per 10 s, burst 5), over all clients 1/s with burst 30.
	LoginRate  rate.Limit
	LoginBurst int
	Logger     *slog.Logger
	Now        func() time.Time
}

// Handler is the admin's http.Handler. Create it with New.
type Handler struct {
	o     Options
	keys  keys
	creds *credentials
	limit *loginlimit.Limiter
	mux   *http.ServeMux

	rendered atomic.Pointer[renderedRows] // rows of the last rendered report
	revoked  *revocations                 // sessions ended by logout in this process
}

//go:embed templates/*.html static/favicon.svg
var templateFS embed.FS

var templates = template.Must(template.New("").Funcs(template.FuncMap{
	"bytes": humanBytes,
	"ago":   ago,
	"when":  when,
	"ms":    func(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) },
}).ParseFS(templateFS, "templates/*.html"))

// New checks o and returns a Handler.
func New(o Options) (*Handler, error) {
	if o.Stats == nil {
		return nil, errors.New("http: Stats is required")
	}
	if o.User == "" {
		return nil, errors.New("http: superadmin user is required")
	}
	if err := password.Check(o.PasswordHash); err != nil {
		return nil, fmt.Errorf("http: superadmin password hash: %w", err)
	}
	if len(o.SessionKey) < 32 {
		return nil, errors.New("http: session key must be at least 32 bytes")
	}
	if o.SessionTTL <= 0 {
		o.SessionTTL = 12 * time.Hour
	}
	if o.TrustedProxies == nil {
		o.TrustedProxies = loginlimit.DefaultTrustedProxies()
	}
	if o.LoginRate == 0 {
		o.LoginRate = rate.Every(10 * time.Second)
	}
	if o.LoginBurst == 0 {
		o.LoginBurst = 5
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	h := &Handler{
		o:       o,
		keys:    deriveKeys(o.SessionKey, o.PasswordHash),
		creds:   &credentials{user: o.User, hash: o.PasswordHash, key: mac(o.SessionKey, "basic")},
		limit:   loginlimit.New(o.LoginRate, o.LoginBurst, loginlimit.DefaultGlobalRate, loginlimit.DefaultGlobalBurst),
		mux:     http.NewServeMux(),
		revoked: &revocations{until: map[string]time.Time{}},
	}
	h.mux.HandleFunc("GET /healthz", h.healthz)
	h.mux.HandleFunc("GET /metrics", h.metrics)
	h.mux.HandleFunc("GET /favicon.ico", favicon)
	h.mux.HandleFunc("GET /login", h.loginForm)
	h.mux.HandleFunc("POST /login", h.login)
	h.mux.HandleFunc("POST /logout", h.requireSession(h.logout))
	h.mux.HandleFunc("GET /{$}", h.requireSession(h.dashboard))
	h.mux.HandleFunc("POST /refresh", h.requireSession(h.refresh))
	h.mux.HandleFunc("GET /api/v1/stats", h.apiStats)
	return h, nil
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "same-origin")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Content-Security-Policy", "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.mux.ServeHTTP(w, r)
}

// favicon serves the site icon without a login, so browsers asking for
// /favicon.ico get an icon rather than a redirect or a 404.
func favicon(w http.ResponseWriter, r *http.Request) {
	b, _ := templateFS.ReadFile("static/favicon.svg")
	w.Header().Set("Content-Type", "image/svg+xml")
	w.Header().Set("Cache-Control", "public, max-age=86400")
	w.Write(b)
}

func (h *Handler) healthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, "ok")
}

func (h *Handler) metrics(w http.ResponseWriter, r *http.Request) {
	if h.o.Metrics == nil {
		http.NotFound(w, r)
		return
	}
	if h.o.MetricsToken != "" {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(h.o.MetricsToken)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="stagesub-admin metrics"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
	}
	h.o.Metrics.ServeHTTP(w, r)
}

// session returns the request's valid session, if any.
func (h *Handler) session(r *http.Request) (session, bool) {
	c, err := r.Cookie(SessionCookie)
	if err != nil {
		return session{}, false
	}
	now := h.o.Now()
	s, ok := h.keys.decodeSession(c.Value, now)
	if !ok || subtle.ConstantTimeCompare([]byte(s.user), []byte(h.o.User)) != 1 || h.revoked.has(s.nonce, now) {
		return session{}, false
	}
	return s, true
}

type sessionKey struct{}

// requireSession redirects requests without a valid session to the login
// page and checks the CSRF token of every POST.
func (h *Handler) requireSession(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s, ok := h.session(r)
		if !ok {
			if r.Method != http.MethodGet {
				http.Error(w, "login required", http.StatusUnauthorized)
				return
			}
			http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
		}
		if r.Method == http.MethodPost && !h.keys.validCSRF(s.nonce, r.PostFormValue(csrfField)) {
			http.Error(w, "invalid or missing CSRF token; reload the page", http.StatusForbidden)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		next(w, r.WithContext(context.WithValue(r.Context(), sessionKey{}, s)))
	}
}

func sessionFrom(r *http.Request) session {
	s, _ := r.Context().Value(sessionKey{}).(session)
	return s
}

func (h *Handler) setCookie(w http.ResponseWriter, name, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: value, Path: "/", MaxAge: maxAge,
		Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
}

// safeNext returns next if it is a path on this host, else "/".
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/\\") {
		return "/"
	}
	return next
}

type loginPage struct {
	CSRF  string
	Next  string
	Error string
	User  string
}

func (h *Handler) loginForm(w http.ResponseWriter, r *http.Request) {
	if _, ok := h.session(r); ok {
		http.Redirect(w, r, safeNext(r.URL.Query().Get("next")), http.StatusSeeOther)
		return
	}
	h.renderLogin(w, r, http.StatusOK, "", "")
}

func (h *Handler) renderLogin(w http.ResponseWriter, r *http.Request, status int, msg, user string) {
	nonce := ""
	if c, err := r.Cookie(CSRFCookie); err == nil && len(c.Value) >= 16 {
		nonce = c.Value
	} else {
		nonce = randomToken()
		h.setCookie(w, CSRFCookie, nonce, 3600)
	}
	w.Header().Set("Cache-Control", "no-store")
	next := r.FormValue("next")
	h.render(w, status, "login.html", loginPage{CSRF: h.keys.csrfToken(nonce), Next: safeNext(next), Error: msg, User: user})
}

func (h *Handler) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	c, err := r.Cookie(CSRFCookie)
	if err != nil || !h.keys.validCSRF(c.Value, r.PostFormValue(csrfField)) {
		h.renderLogin(w, r, http.StatusForbidden, "Your session form expired; please try again.", "")
		return
	}
	client := loginlimit.ClientIP(r, h.o.TrustedProxies)
	if !h.limit.Allow(client, h.o.Now()) {
		h.o.Logger.Warn("login rate limited", "client", client)
		w.Header().Set("Retry-After", "60")
		h.renderLogin(w, r, http.StatusTooManyRequests, "Too many login attempts; wait a minute.", "")
		return
	}
	user := r.PostFormValue("user")
	if !h.creds.check(user, r.PostFormValue("password")) {
		h.o.Logger.Warn("login failed", "client", client)
		h.renderLogin(w, r, http.StatusUnauthorized, "Wrong user name or password.", user)
		return
	}
	s := session{user: h.o.User, expires: h.o.Now().Add(h.o.SessionTTL), nonce: randomToken()}
	h.setCookie(w, SessionCookie, h.keys.encodeSession(s), int(h.o.SessionTTL/time.Second))
	h.setCookie(w, CSRFCookie, "", -1)
	h.o.Logger.Info("login", "client", client)
	http.Redirect(w, r, safeNext(r.PostFormValue("next")), http.StatusSeeOther)
}

// logout revokes the session in this process (a copy of the cookie taken
// before logout is refused afterwards) and clears the cookie.
func (h *Handler) logout(w http.ResponseWriter, r *http.Request) {
	s := sessionFrom(r)
	h.revoked.add(s.nonce, s.expires, h.o.Now())
	h.o.Logger.Info("logout", "client", loginlimit.ClientIP(r, h.o.TrustedProxies))
	h.setCookie(w, SessionCookie, "", -1)
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

func (h *Handler) refresh(w http.ResponseWriter, r *http.Request) {
	// Wait for the refresh while the browser waits; if it goes away and no
	// one else waits, the fan-out is cancelled.
	ctx, cancel := context.WithTimeout(r.Context(), time.Minute)
	defer cancel()
	if _, err := h.o.Stats.Refresh(ctx); err != nil {
		h.o.Logger.Warn("manual refresh", "err", err)
	}
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// apiStats serves the report as JSON to a session or HTTP Basic auth.
func (h *Handler) apiStats(w http.ResponseWriter, r *http.Request) {
	if _, ok := h.session(r); !ok {
		user, pw, basic := r.BasicAuth()
		if !basic {
			w.Header().Set("WWW-Authenticate", `Basic realm="stagesub-admin", charset="UTF-8"`)
			http.Error(w, "login required", http.StatusUnauthorized)
			return
		}
		// The limiter comes first: a limited client gets 429 whatever it
		// sends, and no password hash is computed for it.
		client := loginlimit.ClientIP(r, h.o.TrustedProxies)
		now := h.o.Now()
		refund, ok := h.limit.Reserve(client, now)
		if !ok {
			h.o.Logger.Warn("basic auth rate limited", "client", client)
			w.Header().Set("Retry-After", "60")
			http.Error(w, "too many attempts", http.StatusTooManyRequests)
			return
		}
		if !h.creds.check(user, pw) {
			h.o.Logger.Warn("basic auth failed", "client", client)
			w.Header().Set("WWW-Authenticate", `Basic realm="stagesub-admin", charset="UTF-8"`)
			http.Error(w, "wrong user name or password", http.StatusUnauthorized)
			return
		}
		refund()
	}
	rep := h.o.Stats.Get()
	v := parseView(r.URL.Query())
	now := h.o.Now()
	out := apiReport{
		Generation: rep.Generation, Refreshing: h.o.Stats.Refreshing(), Restored: rep.Restored,
		IntervalSeconds: h.o.Stats.Interval().Seconds(),
		Totals:          rep.Totals, Tenants: []json.RawMessage{},
	}
	rendered := h.render1(rep)
	for _, i := range v.apply(rep.Tenants) {
		out.Tenants = append(out.Tenants, rendered.json[i])
	}
	if !rep.Empty() {
		fin := rep.FinishedAt.UTC()
		out.GeneratedAt = &fin
		out.AgeSeconds = rep.Age(now).Seconds()
		out.DurationSeconds = rep.Duration.Seconds()
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(out)
}

type apiReport struct {
	GeneratedAt     *time.Time        `json:"generated_at"` // nil before the first refresh
	AgeSeconds      float64           `json:"age_seconds"`
	DurationSeconds float64           `json:"duration_seconds"`
	Generation      uint64            `json:"generation"`
	Refreshing      bool              `json:"refreshing"`
	Restored        bool              `json:"restored"` // loaded from the state file: collected before the admin restarted
	IntervalSeconds float64           `json:"refresh_interval_seconds"`
	Totals          admin.Totals      `json:"totals"`
	Tenants         []json.RawMessage `json:"tenants"` // admin.TenantStats
}

type dashboardPage struct {
	Report     *admin.Report
	Rows       []template.HTML // pre-rendered rows, in view order
	View       view
	Now        time.Time
	Age        time.Duration
	Stale      bool
	Refreshing bool
	CSRF       string
	Statuses   []string
	Columns    []column
}

type column struct {
	Key, Label, Href string
	Sorted, Desc     bool
}

func (h *Handler) dashboard(w http.ResponseWriter, r *http.Request) {
	rep := h.o.Stats.Get()
	v := parseView(r.URL.Query())
	now := h.o.Now()
	p := dashboardPage{
		Report: rep, View: v, Now: now, Age: rep.Age(now),
		Stale:      !rep.Empty() && rep.Age(now) > 2*h.o.Stats.Interval(),
		Refreshing: h.o.Stats.Refreshing(),
		CSRF:       h.keys.csrfToken(sessionFrom(r).nonce),
		Statuses:   []string{"active", "provisioning", "suspended", "maintenance", "deleting"},
	}
	rendered := h.render1(rep)
	for _, i := range v.apply(rep.Tenants) {
		p.Rows = append(p.Rows, rendered.html[i])
	}
	for _, c := range columns {
		col := column{Key: c.key, Label: c.label, Sorted: v.Sort == c.key, Desc: v.Sort == c.key && v.Desc}
		nv := v
		nv.Sort, nv.Desc = c.key, col.Sorted && !v.Desc
		col.Href = "/?" + nv.query().Encode()
		p.Columns = append(p.Columns, col)
	}
	h.render(w, http.StatusOK, "dashboard.html", p)
}

// renderedRows holds the HTML and JSON of every row of one report.
type renderedRows struct {
	rep  *admin.Report
	html []template.HTML   // same order as rep.Tenants
	json []json.RawMessage // same order as rep.Tenants
}

// Warm renders the rows of rep ahead of the first request that shows it;
// call it for every published report (admin.CacheOptions.OnReport).
func (h *Handler) Warm(rep *admin.Report) { h.render1(rep) }

// render1 renders the rows of rep once per report: a report never changes,
// and pages and API answers then only pick and reorder them.
func (h *Handler) render1(rep *admin.Report) *renderedRows {
	if rr := h.rendered.Load(); rr != nil && rr.rep == rep {
		return rr
	}
	n := len(rep.Tenants)
	rr := &renderedRows{rep: rep, html: make([]template.HTML, n), json: make([]json.RawMessage, n)}
	var buf bytes.Buffer
	for i := range rep.Tenants {
		t := &rep.Tenants[i]
		buf.Reset()
		if err := templates.ExecuteTemplate(&buf, "row", t); err != nil {
			h.o.Logger.Error("render row", "tenant", t.Slug, "err", err)
			buf.Reset()
			buf.WriteString(`<tr><td colspan="12">` + template.HTMLEscapeString(t.Slug) + `: internal error</td></tr>`)
		}
		rr.html[i] = template.HTML(buf.String()) // html/template output: escaped
		b, err := json.Marshal(t)
		if err != nil {
			b = []byte(`{"slug":` + strconv.Quote(t.Slug) + `,"error":"internal error"}`)
		}
		rr.json[i] = b
	}
	h.rendered.Store(rr)
	return rr
}

func (h *Handler) render(w http.ResponseWriter, status int, name string, data any) {
	var buf bytes.Buffer
	if err := templates.ExecuteTemplate(&buf, name, data); err != nil {
		h.o.Logger.Error("render", "template", name, "err", err)
		http.Error(w, "Internal error.", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func ago(d time.Duration) string {
	switch {
	case d < time.Second:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%d s ago", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%d min ago", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%d h ago", int(d/time.Hour))
	}
	return fmt.Sprintf("%d days ago", int(d/(24*time.Hour)))
}

func when(t *time.Time) string {
	if t == nil {
		return "never"
	}
	return t.UTC().Format("2006-01-02 15:04 UTC")
}
