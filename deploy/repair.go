package deploy

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/mail"
	"strings"

	"stagesub.dev/app/schema"
	"stagesub.dev/registry"
)

// RepairRequest asks to re-apply the security and setup steps of an
// existing tenant.
type RepairRequest struct {
	Slug string
	// AdminEmail, when set, creates the first staff admin with this e-mail
	// if the tenant has no staff admin at all (a tenant created without
	// --admin-email has no staff login).
	AdminEmail string
}

// RepairResult is what a repair found and did.
type RepairResult struct {
	Tenant  *registry.Tenant
	EnvFile string
	// Fixed lists what was wrong before the repair, one finding a line.
	// Empty when everything was already in order.
	Fixed []string
	// RestartNeeded is true when the tenant role's password changed: running
	// instances must be restarted to read the env file again.
	RestartNeeded bool
	// AdminCreated is true when this run created the staff admin, whose
	// one-time password is AdminPassword. AdminExisted is true when a staff
	// admin with AdminEmail already existed (password unchanged).
	AdminCreated  bool
	AdminExisted  bool
	AdminPassword string
}

// Repair re-runs the idempotent security and setup steps of an existing
// tenant and reports what was wrong: the stats role exists (with
// StatsPassword when set); PUBLIC holds no privilege on the tenant database;
// the tenant role has CONNECT and TEMPORARY and the stats role CONNECT; the
// env file exists and matches the server, and the tenant role logs in with
// its password; the database is bound to the tenant; the stats role may
// SELECT the stats view; with AdminEmail, the first staff admin exists.
//
// Invariants: Repair never creates a tenant, a database or a record, never
// migrates, and never touches a database bound to another tenant (EINVALID).
// A tenant that is provisioning (finish it with Create) or deleting is
// refused with ECONFLICT. Every step is idempotent, so a repair of a healthy
// tenant changes nothing visible and reports nothing fixed. The tenant
// role's password only changes when the env file has none or the role
// cannot log in with it; RestartNeeded then says so.
func (p *Provisioner) Repair(ctx context.Context, req RepairRequest) (*RepairResult, error) {
	if err := registry.ValidateSlug(req.Slug); err != nil {
		return nil, err
	}
	if req.AdminEmail != "" {
		a, err := mail.ParseAddress(req.AdminEmail)
		if err != nil || a.Address != req.AdminEmail {
			return nil, registry.Errorf(registry.EINVALID, "admin email %q is not a plain e-mail address", req.AdminEmail)
		}
	}
	log := p.logger().With("tenant", req.Slug)
	t, err := p.Store.FindTenant(ctx, req.Slug)
	if err != nil {
		return nil, p.consulErr("read tenant "+req.Slug, err)
	}
	switch t.Status {
	case registry.StatusProvisioning:
		return nil, registry.Errorf(registry.ECONFLICT, "tenant %q is still provisioning: re-run `tenant create` to finish it", req.Slug)
	case registry.StatusDeleting:
		return nil, registry.Errorf(registry.ECONFLICT, "tenant %q is being deleted", req.Slug)
	}
	srv, err := p.Server(t.Database.Server)
	if err != nil {
		return nil, err
	}
	role, dbname := registry.RoleName(req.Slug), t.Database.Name
	pgErr := func(what string, err error) error {
		return fmt.Errorf("postgres server %q (%s:%d): %s: %w", srv.Name(), t.Database.Host, t.Database.Port, what, err)
	}
	res := &RepairResult{Tenant: t, EnvFile: p.Secrets.File(req.Slug)}

	// Privileges: look first, then re-apply unconditionally.
	problems, err := srv.LockDownProblems(ctx, dbname, role)
	if err != nil {
		return nil, pgErr("privileges on "+dbname, err)
	}
	res.Fixed = append(res.Fixed, problems...)
	if err := srv.EnsureStatsRole(ctx, p.StatsPassword); err != nil {
		return nil, pgErr("stats role", err)
	}
	if err := srv.LockDown(ctx, dbname, role); err != nil {
		return nil, pgErr("privileges on "+dbname, err)
	}

	password, err := p.repairSecret(req.Slug, srv, res)
	if err != nil {
		return nil, err
	}
	url := srv.TenantURL(req.Slug, password)
	if res.RestartNeeded { // a new password: the role gets it first
		if err := srv.EnsureRole(ctx, role, password); err != nil {
			return nil, pgErr("role "+role, err)
		}
	}
	db, err := p.OpenDB(ctx, url)
	if err != nil && !res.RestartNeeded {
		res.Fixed = append(res.Fixed, fmt.Sprintf("role %s could not log in with the env file's password (%v): password reset", role, err))
		res.RestartNeeded = true
		if err := srv.EnsureRole(ctx, role, password); err != nil {
			return nil, pgErr("role "+role, err)
		}
		db, err = p.OpenDB(ctx, url)
	}
	if err != nil {
		return nil, pgErr("connect as "+role, err)
	}
	defer db.Close()

	if err := p.repairSchema(ctx, db, req, t, res); err != nil {
		switch registry.ErrorCode(err) {
		case registry.ECONFLICT, registry.EINVALID:
			return nil, err
		}
		return nil, pgErr("schema of "+dbname, err)
	}
	log.Info("tenant repaired", "fixed", len(res.Fixed), "restart_needed", res.RestartNeeded, "admin_created", res.AdminCreated)
	return res, nil
}

// repairSecret returns the tenant role's password from the env file,
// rewriting the file when it is missing, has no password, or does not match
// the server's URL and the slug. A new password sets res.RestartNeeded.
func (p *Provisioner) repairSecret(slug string, srv DBServer, res *RepairResult) (string, error) {
	env, err := p.Secrets.Read(slug)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("read secrets of %s: %w", slug, err)
	}
	pw := PasswordOf(env[registry.EnvDatabaseURL])
	switch {
	case err != nil:
		res.Fixed = append(res.Fixed, "env file "+p.Secrets.File(slug)+" was missing: wrote a new password")
	case pw == "":
		res.Fixed = append(res.Fixed, "env file "+p.Secrets.File(slug)+" had no password in "+registry.EnvDatabaseURL+": wrote a new one")
	case env[registry.EnvDatabaseURL] != srv.TenantURL(slug, pw) || env[registry.EnvTenant] != slug:
		res.Fixed = append(res.Fixed, "env file "+p.Secrets.File(slug)+" did not match the tenant's database location or slug: rewritten")
		return pw, p.writeSecret(slug, srv, pw)
	default:
		return pw, nil
	}
	pw, err = NewPassword()
	if err != nil {
		return "", err
	}
	res.RestartNeeded = true
	return pw, p.writeSecret(slug, srv, pw)
}

// repairSchema checks the binding, re-grants the stats view, and creates the
// first staff admin when asked, as the tenant role on db.
func (p *Provisioner) repairSchema(ctx context.Context, db *sql.DB, req RepairRequest, t *registry.Tenant, res *RepairResult) error {
	bound, err := schema.BoundTenant(ctx, db)
	if err != nil {
		return err
	}
	switch bound {
	case req.Slug:
	case "":
		if err := schema.Bind(ctx, db, req.Slug, t.Name); err != nil {
			return fmt.Errorf("bind: %w", err)
		}
		res.Fixed = append(res.Fixed, "database was bound to no tenant: bound to "+req.Slug)
	default:
		return registry.Errorf(registry.EINVALID, "database %s is bound to tenant %q, not %q: refusing to repair", t.Database.Name, bound, req.Slug)
	}

	var canSelect, canUse bool
	err = db.QueryRowContext(ctx, "SELECT has_table_privilege($1, $2, 'SELECT'), has_schema_privilege($1, 'public', 'USAGE')",
		registry.StatsRole, schema.StatsView).Scan(&canSelect, &canUse)
	if err != nil {
		return fmt.Errorf("check stats view privileges: %w", err)
	}
	if !canSelect {
		res.Fixed = append(res.Fixed, registry.StatsRole+" lacked SELECT on "+schema.StatsView)
	}
	if !canUse {
		res.Fixed = append(res.Fixed, registry.StatsRole+" lacked USAGE on schema public")
	}
	if err := schema.GrantStats(ctx, db, registry.StatsRole); err != nil {
		return fmt.Errorf("grant stats view: %w", err)
	}

	if req.AdminEmail == "" {
		return nil
	}
	var admins []string
	rows, err := db.QueryContext(ctx, "SELECT lower(email) FROM users WHERE role = 'admin' ORDER BY 1")
	if err != nil {
		return fmt.Errorf("list staff admins: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var e string
		if err := rows.Scan(&e); err != nil {
			return fmt.Errorf("list staff admins: %w", err)
		}
		admins = append(admins, e)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("list staff admins: %w", err)
	}
	for _, a := range admins {
		if a == strings.ToLower(req.AdminEmail) {
			res.AdminExisted = true
			return nil
		}
	}
	if len(admins) > 0 {
		return registry.Errorf(registry.ECONFLICT, "tenant %q already has staff admin(s) %s: repair only creates the first one; add more in the app", req.Slug, strings.Join(admins, ", "))
	}
	pw, err := NewPassword()
	if err != nil {
		return err
	}
	created, err := schema.CreateStaffAdmin(ctx, db, req.AdminEmail, pw)
	if err != nil {
		return fmt.Errorf("create staff admin: %w", err)
	}
	if created {
		res.AdminCreated, res.AdminPassword = true, pw
		res.Fixed = append(res.Fixed, "tenant had no staff admin: created "+req.AdminEmail)
	} else {
		// A non-admin user has this e-mail: never promote it silently.
		return registry.Errorf(registry.ECONFLICT, "user %s exists in tenant %q but is not a staff admin", req.AdminEmail, req.Slug)
	}
	return nil
}
