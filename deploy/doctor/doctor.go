// Package doctor runs the troubleshooting list of one tenant, automated:
// DNS of <slug>.<base> (when a resolver is configured), the tenant record,
// the database reached with the tenant's own credentials and its schema,
// the app instances in Consul, a request through the router for the
// tenant's host, and the router's certificate for that host.
//
// Every check yields one Check with a remedy when it fails. Checks that
// only make sense when an earlier one passed (the router needs a record and
// a passing instance) are skipped, so the first failure is the cause.
// Every network operation is bounded by Doctor.Timeout.
package doctor

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"stagesub.dev/app/schema"
	"stagesub.dev/deploy"
	"stagesub.dev/deploy/postgres"
	"stagesub.dev/registry"
)

// Result of a check.
type Result string

const (
	OK   Result = "ok"
	Fail Result = "fail"
	Skip Result = "skip"
)

// Check names, in the order they run.
const (
	CheckDNS         = "dns"
	CheckRecord      = "record"
	CheckDatabase    = "database"
	CheckInstances   = "instances"
	CheckRouter      = "router"
	CheckCertificate = "certificate"
)

// Check is the outcome of one item of the list.
type Check struct {
	Name   string `json:"name"`
	Result Result `json:"result"`
	Detail string `json:"detail"`
	Remedy string `json:"remedy,omitempty"`
}

// Report is every check of one tenant.
type Report struct {
	Slug   string  `json:"slug"`
	Host   string  `json:"host"`
	Checks []Check `json:"checks"`
}

// OK reports whether no check failed.
func (r *Report) OK() bool {
	for _, c := range r.Checks {
		if c.Result == Fail {
			return false
		}
	}
	return true
}

// Failed returns the names of the failed checks.
func (r *Report) Failed() []string {
	var out []string
	for _, c := range r.Checks {
		if c.Result == Fail {
			out = append(out, c.Name)
		}
	}
	return out
}

// Get returns the check called name (zero Check when absent).
func (r *Report) Get(name string) Check {
	for _, c := range r.Checks {
		if c.Name == name {
			return c
		}
	}
	return Check{}
}

// Doctor checks tenants. Fields are set once before use.
type Doctor struct {
	Store      registry.TenantStore
	Consul     *api.Client
	ConsulAddr string // for messages
	Secrets    deploy.Secrets
	BaseDomain string
	// Resolver is a DNS server "host:port" to ask for <slug>.<base>; ""
	// skips the DNS check.
	Resolver string
	// RouterURL is the router's address, http://host:port or
	// https://host:port; "" skips the router and certificate checks.
	RouterURL string
	// CAFile holds the roots to verify the router's certificate with; ""
	// means the system roots.
	CAFile string
	// MinValidity is how long the certificate must still be valid; default
	// 14 days.
	MinValidity time.Duration
	// Timeout bounds each check; default 5s.
	Timeout time.Duration
	Now     func() time.Time
}

func (d *Doctor) now() time.Time {
	if d.Now != nil {
		return d.Now()
	}
	return time.Now()
}

func (d *Doctor) timeout() time.Duration {
	if d.Timeout > 0 {
		return d.Timeout
	}
	return 5 * time.Second
}

// Host returns <slug>.<base>.
func (d *Doctor) Host(slug string) string { return slug + "." + d.BaseDomain }

// Check runs every check for slug.
func (d *Doctor) Check(ctx context.Context, slug string) *Report {
	r := &Report{Slug: slug, Host: d.Host(slug)}
	add := func(c Check) Check {
		r.Checks = append(r.Checks, c)
		return c
	}
	if err := registry.ValidateSlug(slug); err != nil {
		add(Check{Name: CheckRecord, Result: Fail, Detail: err.Error(), Remedy: "use a valid slug"})
		return r
	}
	add(d.checkDNS(ctx, slug))
	rec, recCheck := d.checkRecord(ctx, slug)
	add(recCheck)
	add(d.checkDatabase(ctx, slug, rec))
	inst := add(d.checkInstances(ctx, slug))
	switch {
	case d.RouterURL == "":
		add(Check{Name: CheckRouter, Result: Skip, Detail: "no router address configured (STAGESUB_ROUTER_URL)"})
	case recCheck.Result != OK || inst.Result != OK:
		add(Check{Name: CheckRouter, Result: Skip, Detail: "skipped until the record and an instance are fine"})
	default:
		add(d.checkRouter(ctx, slug))
	}
	add(d.Certificate(ctx, slug))
	return r
}

func (d *Doctor) checkDNS(ctx context.Context, slug string) Check {
	c := Check{Name: CheckDNS}
	host := d.Host(slug)
	if d.Resolver == "" {
		c.Result, c.Detail = Skip, "no resolver configured (STAGESUB_DNS_RESOLVER)"
		return c
	}
	ctx, cancel := context.WithTimeout(ctx, d.timeout())
	defer cancel()
	res := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var dl net.Dialer
		return dl.DialContext(ctx, network, d.Resolver)
	}}
	addrs, err := res.LookupHost(ctx, host)
	if err != nil {
		c.Result, c.Detail = Fail, fmt.Sprintf("%s does not resolve at %s: %v", host, d.Resolver, err)
		c.Remedy = fmt.Sprintf("add a record for %s (or a wildcard *.%s) pointing at the routers", host, d.BaseDomain)
		return c
	}
	c.Result, c.Detail = OK, fmt.Sprintf("%s → %s", host, strings.Join(addrs, ", "))
	return c
}

func (d *Doctor) checkRecord(ctx context.Context, slug string) (*registry.Tenant, Check) {
	c := Check{Name: CheckRecord}
	ctx, cancel := context.WithTimeout(ctx, d.timeout())
	defer cancel()
	t, err := d.Store.FindTenant(ctx, slug)
	switch registry.ErrorCode(err) {
	case "":
	case registry.ENOTFOUND:
		c.Result, c.Detail = Fail, fmt.Sprintf("no tenant record at %s", registry.Key(slug))
		c.Remedy = fmt.Sprintf("create it: stagesubctl tenant create %s --name ... (or restore it from its last backup)", slug)
		return nil, c
	case registry.EINVALID:
		c.Result, c.Detail = Fail, "tenant record is invalid: "+err.Error()
		c.Remedy = "fix the record in Consul KV " + registry.Key(slug)
		return nil, c
	default:
		c.Result, c.Detail = Fail, fmt.Sprintf("consul at %s: %v", d.ConsulAddr, err)
		c.Remedy = "check that Consul is reachable (CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN)"
		return nil, c
	}
	c.Detail = fmt.Sprintf("status %s, database %s on %s:%d, schema %d", t.Status, t.Database.Name, t.Database.Host, t.Database.Port, t.SchemaVersion)
	switch t.Status {
	case registry.StatusActive:
		c.Result = OK
	case registry.StatusSuspended:
		c.Result, c.Remedy = Fail, "the router shows the suspended page; resume it: stagesubctl tenant resume "+slug
	case registry.StatusMaintenance:
		c.Result, c.Remedy = Fail, "the router answers 503; resume it: stagesubctl tenant resume "+slug
	case registry.StatusProvisioning:
		c.Result, c.Remedy = Fail, "a create stopped half-way; re-run the same stagesubctl tenant create "+slug
	case registry.StatusDeleting:
		c.Result, c.Remedy = Fail, "a delete stopped half-way; re-run stagesubctl tenant delete "+slug+" --confirm "+slug
	}
	return t, c
}

func (d *Doctor) checkDatabase(ctx context.Context, slug string, rec *registry.Tenant) Check {
	c := Check{Name: CheckDatabase, Result: Fail}
	env, err := d.Secrets.Read(slug)
	if errors.Is(err, fs.ErrNotExist) {
		c.Detail = "no credentials: " + d.Secrets.File(slug) + " is missing"
		c.Remedy = "re-run stagesubctl tenant create " + slug + " (it resets the role's password and writes the env file)"
		return c
	}
	if err != nil {
		c.Detail, c.Remedy = err.Error(), "fix the env file "+d.Secrets.File(slug)
		return c
	}
	dbURL := env[registry.EnvDatabaseURL]
	u, err := url.Parse(dbURL)
	if dbURL == "" || err != nil {
		c.Detail, c.Remedy = d.Secrets.File(slug)+" has no valid "+registry.EnvDatabaseURL, "re-run stagesubctl tenant create "+slug
		return c
	}
	dbname := strings.TrimPrefix(u.Path, "/")
	if rec != nil && dbname != rec.Database.Name {
		c.Detail = fmt.Sprintf("the env file points at database %s, the record at %s", dbname, rec.Database.Name)
		c.Remedy = "re-run the restore that switched the tenant, or fix " + d.Secrets.File(slug)
		return c
	}
	ctx, cancel := context.WithTimeout(ctx, d.timeout())
	defer cancel()
	db, err := postgres.OpenTenant(ctx, dbURL)
	if err != nil {
		c.Detail = fmt.Sprintf("cannot connect to %s as %s: %v", dbname, u.User.Username(), err)
		c.Remedy = "check that the Postgres server " + u.Host + u.Query().Get("host") + " is up; on an authentication error re-run stagesubctl tenant create " + slug
		return c
	}
	defer db.Close()
	v, err := schema.Current(ctx, db)
	if err != nil {
		c.Detail, c.Remedy = err.Error(), "inspect the database "+dbname
		return c
	}
	bound, err := schema.BoundTenant(ctx, db)
	if err != nil {
		c.Detail, c.Remedy = err.Error(), "inspect the database "+dbname
		return c
	}
	if bound != slug {
		c.Detail = fmt.Sprintf("database %s is bound to tenant %q", dbname, bound)
		c.Remedy = "the env file points at another tenant's database: fix " + d.Secrets.File(slug)
		return c
	}
	if v != schema.Latest() {
		c.Detail = fmt.Sprintf("database %s is at schema version %d, this stagesubctl knows %d", dbname, v, schema.Latest())
		c.Remedy = "stagesubctl migrate " + slug
		if v > schema.Latest() {
			c.Remedy = "upgrade stagesubctl (the database is newer)"
		}
		return c
	}
	c.Result, c.Detail = OK, fmt.Sprintf("%s reachable as %s, schema version %d", dbname, u.User.Username(), v)
	return c
}

func (d *Doctor) checkInstances(ctx context.Context, slug string) Check {
	c := Check{Name: CheckInstances, Result: Fail}
	ctx, cancel := context.WithTimeout(ctx, d.timeout())
	defer cancel()
	entries, _, err := d.Consul.Health().Service(registry.ServiceApp, registry.TenantTag(slug), false, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		c.Detail, c.Remedy = fmt.Sprintf("consul at %s: %v", d.ConsulAddr, err), "check that Consul is reachable"
		return c
	}
	var passing, total int
	var bad []string
	for _, e := range entries {
		if e.Service.Meta[registry.MetaTenant] != slug {
			continue
		}
		total++
		st := e.Checks.AggregatedStatus()
		if st == api.HealthPassing {
			passing++
			continue
		}
		out := ""
		for _, ch := range e.Checks {
			if ch.Status != api.HealthPassing && ch.Output != "" {
				out = strings.TrimSpace(ch.Output)
				if len(out) > 160 {
					out = out[:160] + "..."
				}
			}
		}
		bad = append(bad, fmt.Sprintf("%s %s (%s)", e.Service.ID, st, out))
	}
	switch {
	case total == 0:
		c.Detail = "no instance of " + registry.ServiceApp + " registered for " + slug
		c.Remedy = "start it: systemctl start stagesub-app@" + slug + " (or stagesubctl tenant create " + slug + " --start); check its log"
	case passing == 0:
		c.Detail = fmt.Sprintf("%d registered, none passing: %s", total, strings.Join(bad, "; "))
		c.Remedy = "read the instance's log; /healthz fails when its database is unreachable"
	default:
		c.Result, c.Detail = OK, fmt.Sprintf("%d of %d passing", passing, total)
	}
	return c
}

func (d *Doctor) tlsConfig(host string) (*tls.Config, error) {
	cfg := &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	if d.CAFile != "" {
		pem, err := os.ReadFile(d.CAFile)
		if err != nil {
			return nil, fmt.Errorf("CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s holds no PEM certificate", d.CAFile)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

func (d *Doctor) checkRouter(ctx context.Context, slug string) Check {
	c := Check{Name: CheckRouter, Result: Fail}
	host := d.Host(slug)
	u, err := url.Parse(d.RouterURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		c.Detail, c.Remedy = fmt.Sprintf("router URL %q is not http(s)://host:port", d.RouterURL), "fix STAGESUB_ROUTER_URL"
		return c
	}
	tlsCfg, err := d.tlsConfig(host)
	if err != nil {
		c.Detail, c.Remedy = err.Error(), "fix STAGESUB_CA_FILE"
		return c
	}
	client := &http.Client{
		Timeout:   d.timeout(),
		Transport: &http.Transport{TLSClientConfig: tlsCfg, DisableKeepAlives: true, Proxy: nil},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.Scheme+"://"+u.Host+"/healthz", nil)
	if err != nil {
		c.Detail = err.Error()
		return c
	}
	req.Host = host
	res, err := client.Do(req)
	if err != nil {
		c.Detail = fmt.Sprintf("router at %s: %v", u.Host, err)
		c.Remedy = "check that the router runs (systemctl status stagesub-router) and listens on " + u.Host
		return c
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
	text := strings.TrimSpace(string(body))
	switch {
	case res.StatusCode == http.StatusOK && text == "ok":
		c.Result, c.Detail = OK, fmt.Sprintf("GET %s/healthz with Host %s → 200 from the tenant's app", d.RouterURL, host)
	case res.StatusCode == http.StatusNotFound:
		c.Detail = fmt.Sprintf("router answers 404 for %s: it does not know the host", host)
		c.Remedy = "check the router's base domain (STAGESUB_BASE_DOMAIN) and its Consul connection; the record exists"
	case res.StatusCode == http.StatusServiceUnavailable:
		c.Detail = fmt.Sprintf("router answers 503 for %s: no healthy instance in its table", host)
		c.Remedy = "the router's view lags Consul or cannot reach the instance address; check the router's log"
	case res.StatusCode >= 300 && res.StatusCode < 400:
		c.Detail = fmt.Sprintf("router redirects (%d to %s)", res.StatusCode, res.Header.Get("Location"))
		c.Remedy = "point STAGESUB_ROUTER_URL at the router's HTTPS address"
	case res.StatusCode == http.StatusMisdirectedRequest:
		c.Detail = "421: the request reached an app of another tenant"
		c.Remedy = "a router routing to the wrong tenant is a serious bug: check the router's table and instance registrations"
	default:
		c.Detail = fmt.Sprintf("router answers %d: %.120s", res.StatusCode, text)
		c.Remedy = "check the router's and the instance's logs"
	}
	return c
}

// Certificate checks the router's certificate for <slug>.<base> (TLS with SNI).
func (d *Doctor) Certificate(ctx context.Context, slug string) Check {
	c := Check{Name: CheckCertificate, Result: Fail}
	host := d.Host(slug)
	u, err := url.Parse(d.RouterURL)
	if d.RouterURL == "" || err != nil || u.Scheme != "https" {
		c.Result, c.Detail = Skip, "no https router address configured (STAGESUB_ROUTER_URL=https://...)"
		return c
	}
	cfg, err := d.tlsConfig(host)
	if err != nil {
		c.Detail, c.Remedy = err.Error(), "fix STAGESUB_CA_FILE"
		return c
	}
	ctx, cancel := context.WithTimeout(ctx, d.timeout())
	defer cancel()
	dialer := &tls.Dialer{Config: cfg}
	conn, err := dialer.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		c.Detail = fmt.Sprintf("TLS to %s with SNI %s: %v", u.Host, host, err)
		var verr *tls.CertificateVerificationError
		if errors.As(err, &verr) {
			c.Remedy = "the certificate does not verify: check the router's TLS setup (ACME DNS-01 for *." + d.BaseDomain + ") or STAGESUB_CA_FILE"
		} else {
			c.Remedy = "check that the router listens for HTTPS on " + u.Host
		}
		return c
	}
	defer conn.Close()
	leaf := conn.(*tls.Conn).ConnectionState().PeerCertificates[0]
	left := leaf.NotAfter.Sub(d.now())
	minv := d.MinValidity
	if minv <= 0 {
		minv = 14 * 24 * time.Hour
	}
	if left < minv {
		c.Detail = fmt.Sprintf("certificate for %s expires %s (in %s, less than %s)", host, leaf.NotAfter.UTC().Format(time.RFC3339), left.Round(time.Hour), minv)
		c.Remedy = "renewal is failing: check the router's ACME log and DNS provider credentials"
		return c
	}
	c.Result, c.Detail = OK, fmt.Sprintf("valid for %s, issuer %q, expires %s (%d days)", host, leaf.Issuer.CommonName, leaf.NotAfter.UTC().Format("2006-01-02"), int(left.Hours()/24))
	return c
}
