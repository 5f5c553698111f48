package deploy

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/mail"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"

	"filippo.io/age"

	"stagesub.dev/app/schema"
	"stagesub.dev/registry"
)

// Provisioner creates tenants and migrates their databases. Its fields are
// set once before use; it is safe for concurrent use afterwards.
type Provisioner struct {
	Store   registry.TenantStore
	Locker  Locker
	Secrets Secrets
	// Servers holds the configured Postgres servers by name; DefaultServer
	// names the one used when a request names none.
	Servers       map[string]DBServer
	DefaultServer string
	// OpenDB opens a tenant's database as the tenant role.
	OpenDB OpenDBFunc
	// Target starts instances (create with Start). May be nil.
	Target Target
	// AppEnv is the extra env of every started instance (AppSpec.Env).
	AppEnv []string
	// StatsPassword, when set, becomes the password of the stats role.
	StatsPassword string
	// ConsulAddr and the servers' names appear in errors so the operator
	// knows which dependency failed.
	ConsulAddr string
	Logger     *slog.Logger
	Now        func() time.Time
}

// CreateRequest asks for a new tenant.
type CreateRequest struct {
	Slug       string
	Name       string
	AdminEmail string   // optional first staff admin
	Domains    []string // extra custom domains
	DBServer   string   // "" = DefaultServer
	Start      bool     // start an instance through Target
	// BackupRecipient is the age public key ("age1...") backups of the
	// tenant are encrypted to; optional, settable later with
	// `stagesubctl tenant backup-key`.
	BackupRecipient string
}

// CreateResult is what a create did.
type CreateResult struct {
	Tenant  *registry.Tenant
	Resumed bool // a half-created tenant was finished
	EnvFile string
	// AdminCreated is true when this run created the staff admin, whose
	// one-time password is AdminPassword.
	AdminCreated  bool
	AdminPassword string
	Started       bool
	Elapsed       time.Duration
}

// Validate checks a request without touching anything. Errors are registry
// EINVALID errors.
func (r *CreateRequest) Validate() error {
	if err := registry.ValidateSlug(r.Slug); err != nil {
		return err
	}
	r.Name = strings.TrimSpace(r.Name)
	if r.Name == "" || len(r.Name) > 200 {
		return registry.Errorf(registry.EINVALID, "name must be 1 to 200 characters long")
	}
	r.BackupRecipient = strings.TrimSpace(r.BackupRecipient)
	if r.BackupRecipient != "" {
		if _, err := age.ParseX25519Recipient(r.BackupRecipient); err != nil {
			return registry.Errorf(registry.EINVALID, "backup recipient %q is not an age public key (age1...): %v", r.BackupRecipient, err)
		}
	}
	if r.AdminEmail != "" {
		a, err := mail.ParseAddress(r.AdminEmail)
		if err != nil || a.Address != r.AdminEmail {
			return registry.Errorf(registry.EINVALID, "admin email %q is not a plain e-mail address", r.AdminEmail)
		}
	}
	var ds []string
	for _, d := range r.Domains {
		d = registry.NormalizeDomain(d)
		if err := registry.ValidateDomain(d); err != nil {
			return err
		}
		ds = append(ds, d)
	}
	slices.Sort(ds)
	r.Domains = slices.Compact(ds)
	return nil
}

func (p *Provisioner) logger() *slog.Logger {
	if p.Logger != nil {
		return p.Logger
	}
	return slog.New(slog.DiscardHandler)
}

func (p *Provisioner) now() time.Time {
	if p.Now != nil {
		return p.Now().UTC()
	}
	return time.Now().UTC()
}

// consulErr names Consul as the failing dependency unless err is a domain
// error (conflict, not found, invalid).
func (p *Provisioner) consulErr(what string, err error) error {
	switch registry.ErrorCode(err) {
	case registry.ECONFLICT, registry.ENOTFOUND, registry.EINVALID:
		return err
	}
	return fmt.Errorf("consul at %s: %s: %w", p.ConsulAddr, what, err)
}

// Server returns the configured server name (or the default).
func (p *Provisioner) Server(name string) (DBServer, error) {
	if name == "" {
		name = p.DefaultServer
	}
	s, ok := p.Servers[name]
	if !ok {
		var names []string
		for n := range p.Servers {
			names = append(names, n)
		}
		sort.Strings(names)
		return nil, registry.Errorf(registry.EINVALID, "unknown database server %q (configured: %s)", name, strings.Join(names, ", "))
	}
	return s, nil
}

// Create creates the tenant of req, or finishes it when an earlier create
// stopped half-way.
//
// Invariants: the Consul record is written first, with status provisioning,
// so a half-created tenant is always visible; it becomes active only after
// every other step succeeded. Every step is idempotent, so a re-run after a
// failure at any step completes the tenant. A create lock in Consul plus the
// create-only write of the record make two concurrent creates of one slug
// fail all but one. A record that exists and is not provisioning is a
// duplicate: ECONFLICT, and nothing is touched.
func (p *Provisioner) Create(ctx context.Context, req CreateRequest) (*CreateResult, error) {
	start := time.Now()
	if err := req.Validate(); err != nil {
		return nil, err
	}
	log := p.logger().With("tenant", req.Slug)

	// Fast duplicate check before taking the lock.
	existing, err := p.Store.FindTenant(ctx, req.Slug)
	switch {
	case err == nil && existing.Status != registry.StatusProvisioning:
		return nil, registry.Errorf(registry.ECONFLICT, "tenant %q already exists (status %s)", req.Slug, existing.Status)
	case err != nil && registry.ErrorCode(err) != registry.ENOTFOUND:
		return nil, p.consulErr("read tenant "+req.Slug, err)
	}

	unlock, err := p.Locker.TryLock(ctx, LockKey(req.Slug))
	if err != nil {
		return nil, p.consulErr("lock "+LockKey(req.Slug), err)
	}
	defer unlock()

	res := &CreateResult{EnvFile: p.Secrets.File(req.Slug)}
	t, err := p.ensureRecord(ctx, req, res)
	if err != nil {
		return nil, err
	}
	srv, err := p.Server(t.Database.Server)
	if err != nil {
		return nil, err
	}
	log.Debug("record provisioning", "resumed", res.Resumed)

	// Secrets first: the role's password is never unknown to us.
	password, err := p.ensureSecret(req.Slug, srv)
	if err != nil {
		return nil, err
	}
	role, dbname := registry.RoleName(req.Slug), t.Database.Name
	pgErr := func(what string, err error) error {
		return fmt.Errorf("postgres server %q (%s:%d): %s: %w", srv.Name(), t.Database.Host, t.Database.Port, what, err)
	}
	if err := srv.EnsureStatsRole(ctx, p.StatsPassword); err != nil {
		return nil, pgErr("stats role", err)
	}
	if err := srv.EnsureRole(ctx, role, password); err != nil {
		return nil, pgErr("role "+role, err)
	}
	if err := srv.EnsureDatabase(ctx, dbname, role); err != nil {
		return nil, pgErr("database "+dbname, err)
	}
	if err := srv.LockDown(ctx, dbname, role); err != nil {
		return nil, pgErr("privileges on "+dbname, err)
	}

	version, err := p.setupSchema(ctx, req, srv.TenantURL(req.Slug, password), res)
	if err != nil {
		return nil, pgErr("schema of "+dbname, err)
	}

	if req.Start && p.Target != nil {
		spec := AppSpec{Tenant: req.Slug, EnvFile: p.Secrets.File(req.Slug), Env: p.AppEnv}
		if err := p.Target.Start(ctx, spec); err != nil {
			return nil, fmt.Errorf("start instance on target %s: %w", p.Target.Name(), err)
		}
		res.Started = true
	}

	t, err = p.Store.UpdateTenant(ctx, req.Slug, func(t *registry.Tenant) error {
		if t.Status != registry.StatusProvisioning {
			return registry.Errorf(registry.ECONFLICT, "tenant %q changed to %s during create", req.Slug, t.Status)
		}
		t.Status = registry.StatusActive
		t.SchemaVersion = version
		t.UpdatedAt = p.now()
		return nil
	})
	if err != nil {
		return nil, p.consulErr("activate tenant", err)
	}
	res.Tenant = t
	res.Elapsed = time.Since(start)
	log.Info("tenant created", "resumed", res.Resumed, "schema", version, "elapsed", res.Elapsed)
	return res, nil
}

// ensureRecord writes the provisioning record (create-only) or takes over a
// provisioning one left by an earlier run, updating name and domains.
func (p *Provisioner) ensureRecord(ctx context.Context, req CreateRequest, res *CreateResult) (*registry.Tenant, error) {
	srv, err := p.Server(req.DBServer)
	if err != nil {
		return nil, err
	}
	now := p.now()
	t := &registry.Tenant{
		Version:   registry.RecordVersion,
		Slug:      req.Slug,
		Name:      req.Name,
		Status:    registry.StatusProvisioning,
		Database:  srv.Location(registry.DatabaseName(req.Slug)),
		Domains:   req.Domains,
		CreatedAt: now,
		UpdatedAt: now,

		BackupRecipient: req.BackupRecipient,
	}
	if err := t.Validate(); err != nil {
		return nil, err
	}
	if err := p.checkDomainsFree(ctx, req.Slug, req.Domains); err != nil {
		return nil, err
	}
	err = p.Store.CreateTenant(ctx, t)
	if err == nil {
		return t, nil
	}
	if registry.ErrorCode(err) != registry.ECONFLICT {
		return nil, p.consulErr("create tenant record", err)
	}
	res.Resumed = true
	t, err = p.Store.UpdateTenant(ctx, req.Slug, func(t *registry.Tenant) error {
		if t.Status != registry.StatusProvisioning {
			return registry.Errorf(registry.ECONFLICT, "tenant %q already exists (status %s)", req.Slug, t.Status)
		}
		if req.DBServer != "" && t.Database.Server != srv.Name() {
			return registry.Errorf(registry.ECONFLICT, "tenant %q is being provisioned on database server %q, not %q", req.Slug, t.Database.Server, req.DBServer)
		}
		t.Name = req.Name
		if len(req.Domains) > 0 {
			t.Domains = req.Domains
		}
		if req.BackupRecipient != "" {
			t.BackupRecipient = req.BackupRecipient
		}
		t.UpdatedAt = now
		return nil
	})
	if err != nil {
		return nil, p.consulErr("resume tenant record", err)
	}
	return t, nil
}

// checkDomainsFree fails with ECONFLICT when another tenant has one of ds.
func (p *Provisioner) checkDomainsFree(ctx context.Context, slug string, ds []string) error {
	if len(ds) == 0 {
		return nil
	}
	all, _, err := p.Store.FindTenants(ctx)
	if err != nil {
		return p.consulErr("list tenants", err)
	}
	return DomainsFree(all, slug, ds)
}

// DomainsFree returns ECONFLICT when a tenant other than slug in all holds
// one of ds.
func DomainsFree(all []*registry.Tenant, slug string, ds []string) error {
	for _, o := range all {
		if o.Slug == slug {
			continue
		}
		for _, d := range o.Domains {
			for _, want := range ds {
				if d == want {
					return registry.Errorf(registry.ECONFLICT, "domain %q belongs to tenant %q", d, o.Slug)
				}
			}
		}
	}
	return nil
}

// CheckCustomDomain returns a registry EINVALID error when domain d is the
// base domain or a name under it: the router maps <label>.<base> to tenant
// slugs (and admin.<base> to the admin) and never looks such a host up among
// custom domains, so it would never route. d and base are normalized first;
// an empty base checks nothing.
func CheckCustomDomain(d, base string) error {
	d, base = registry.NormalizeDomain(d), registry.NormalizeDomain(base)
	if base == "" {
		return nil
	}
	if d == base || strings.HasSuffix(d, "."+base) {
		return registry.Errorf(registry.EINVALID, "domain %q is under the base domain %q: the router serves <slug>.%s by slug and ignores custom domains there; use a domain outside %s", d, base, base, base)
	}
	return nil
}

// ensureSecret returns the tenant role's password: the one in the tenant's
// env file when it exists, else a new one, written to the env file before
// the role gets it.
func (p *Provisioner) ensureSecret(slug string, srv DBServer) (string, error) {
	env, err := p.Secrets.Read(slug)
	if err == nil {
		if pw := PasswordOf(env[registry.EnvDatabaseURL]); pw != "" {
			want := srv.TenantURL(slug, pw)
			if env[registry.EnvDatabaseURL] == want && env[registry.EnvTenant] == slug {
				return pw, nil
			}
			// Same password, but the location changed: rewrite below.
			return pw, p.writeSecret(slug, srv, pw)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("read secrets of %s: %w", slug, err)
	}
	pw, err := NewPassword()
	if err != nil {
		return "", err
	}
	return pw, p.writeSecret(slug, srv, pw)
}

func (p *Provisioner) writeSecret(slug string, srv DBServer, pw string) error {
	env := map[string]string{
		registry.EnvDatabaseURL: srv.TenantURL(slug, pw),
		registry.EnvTenant:      slug,
	}
	if err := p.Secrets.Write(slug, env); err != nil {
		return fmt.Errorf("write secrets of %s to %s: %w", slug, p.Secrets.File(slug), err)
	}
	return nil
}

// setupSchema migrates the tenant database as the tenant role, binds it to
// the tenant, grants the stats view, and creates the staff admin.
func (p *Provisioner) setupSchema(ctx context.Context, req CreateRequest, url string, res *CreateResult) (int64, error) {
	db, err := p.OpenDB(ctx, url)
	if err != nil {
		return 0, fmt.Errorf("connect as %s: %w", registry.RoleName(req.Slug), err)
	}
	defer db.Close()
	if _, _, err := schema.Migrate(ctx, db); err != nil {
		return 0, fmt.Errorf("migrate: %w", err)
	}
	if err := schema.Bind(ctx, db, req.Slug, req.Name); err != nil {
		return 0, fmt.Errorf("bind: %w", err)
	}
	if err := schema.GrantStats(ctx, db, registry.StatsRole); err != nil {
		return 0, fmt.Errorf("grant stats view: %w", err)
	}
	if req.AdminEmail != "" {
		pw, err := NewPassword()
		if err != nil {
			return 0, err
		}
		created, err := schema.CreateStaffAdmin(ctx, db, req.AdminEmail, pw)
		if err != nil {
			return 0, fmt.Errorf("create staff admin: %w", err)
		}
		if created {
			res.AdminCreated, res.AdminPassword = true, pw
		}
	}
	v, err := schema.Current(ctx, db)
	if err != nil {
		return 0, fmt.Errorf("schema version: %w", err)
	}
	return v, nil
}

// NewPassword returns a strong random password: 32 random bytes, base64url
// (43 characters, safe in URLs and env files).
func NewPassword() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("random password: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// PasswordOf returns the password in a postgres URL, "" if none.
func PasswordOf(dbURL string) string {
	u, err := url.Parse(dbURL)
	if err != nil || u.User == nil {
		return ""
	}
	pw, _ := u.User.Password()
	return pw
}
