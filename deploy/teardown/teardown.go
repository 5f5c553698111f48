// Package teardown deletes a tenant: record status deleting (the router
// shows a page), instance stopped, a final encrypted backup, then every
// database owned by the tenant role, the role, the secret and the record.
//
// Invariants: nothing is deleted before the final backup is complete (its
// manifest written), unless the backup is explicitly waived. If the backup
// fails, the tenant is put back as it was (status, running instance): the
// delete is a no-op. Once deletion starts, every step is idempotent, so a
// re-run of a delete that stopped half-way (record still "deleting")
// finishes it.
package teardown

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"stagesub.dev/deploy"
	"stagesub.dev/deploy/backup"
	"stagesub.dev/registry"
)

// Server is what deleting needs from a Postgres server
// (deploy/postgres.Server implements it).
type Server interface {
	DatabasesOwnedBy(ctx context.Context, role string) ([]string, error)
	DropDatabase(ctx context.Context, dbname string) error
	DropRole(ctx context.Context, role string) error
}

// Deleter deletes tenants. Fields are set once before use.
type Deleter struct {
	Store         registry.TenantStore
	Secrets       deploy.Secrets
	Servers       map[string]Server
	DefaultServer string
	Backup        *backup.Service
	Locker        deploy.Locker // may be nil
	Target        deploy.Target // may be nil: no instance is stopped
	AppEnv        []string      // env of an instance restarted after a failed backup
	Logger        *slog.Logger
}

// Request asks to delete Slug.
type Request struct {
	Slug string
	// WaiveBackup skips the final backup. Only an explicit operator choice.
	WaiveBackup bool
	// Backup configures the final backup (directory, recipient override).
	Backup backup.Options
}

// Result is what a delete did.
type Result struct {
	Backup          *backup.Result // nil when waived
	Databases       []string       // dropped
	StoppedInstance bool
	Elapsed         time.Duration
}

func (d *Deleter) logger() *slog.Logger {
	if d.Logger != nil {
		return d.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// Delete deletes the tenant of req.
func (d *Deleter) Delete(ctx context.Context, req Request) (*Result, error) {
	start := time.Now()
	slug := req.Slug
	if err := registry.ValidateSlug(slug); err != nil {
		return nil, err
	}
	if !req.WaiveBackup && req.Backup.Dir == "" {
		return nil, registry.Errorf(registry.EINVALID, "no backup directory for the final backup (or waive it explicitly)")
	}
	rec, err := d.Store.FindTenant(ctx, slug)
	if err != nil {
		return nil, err
	}
	srvName := rec.Database.Server
	if srvName == "" {
		srvName = d.DefaultServer
	}
	srv, ok := d.Servers[srvName]
	if !ok {
		return nil, registry.Errorf(registry.EINVALID, "tenant %s is on unknown database server %q", slug, srvName)
	}
	if d.Locker != nil {
		unlock, err := d.Locker.TryLock(ctx, deploy.LockKey(slug))
		if err != nil {
			return nil, err
		}
		defer unlock()
	}
	log := d.logger().With("tenant", slug)
	res := &Result{}

	prev := rec.Status
	if prev != registry.StatusDeleting {
		if _, err := d.setStatus(ctx, slug, registry.StatusDeleting); err != nil {
			return nil, err
		}
	}
	wasRunning := false
	if d.Target != nil {
		st, err := d.Target.Status(ctx, slug)
		if err != nil {
			d.undo(ctx, slug, prev, false)
			return nil, fmt.Errorf("instance status on target %s: %w", d.Target.Name(), err)
		}
		if st.State == deploy.StateRunning || st.State == deploy.StateStarting {
			wasRunning = true
			if err := d.Target.Stop(ctx, slug); err != nil {
				d.undo(ctx, slug, prev, true)
				return nil, fmt.Errorf("stop instance on target %s: %w", d.Target.Name(), err)
			}
			res.StoppedInstance = true
		}
	}
	if !req.WaiveBackup {
		b := d.Backup.Backup(ctx, slug, req.Backup)
		res.Backup = &b
		if b.Err != nil {
			d.undo(ctx, slug, prev, wasRunning)
			return res, fmt.Errorf("final backup failed, nothing deleted: %w", b.Err)
		}
		log.Info("final backup", "file", b.Path)
	}

	// From here on: delete. Every step is idempotent.
	role := registry.RoleName(slug)
	dbs, err := srv.DatabasesOwnedBy(ctx, role)
	if err != nil {
		return res, err
	}
	for _, db := range dbs {
		if err := srv.DropDatabase(ctx, db); err != nil {
			return res, err
		}
		res.Databases = append(res.Databases, db)
	}
	if err := srv.DropRole(ctx, role); err != nil {
		return res, err
	}
	if err := d.Secrets.Remove(slug); err != nil {
		return res, err
	}
	if err := d.Store.DeleteTenant(ctx, slug); err != nil && registry.ErrorCode(err) != registry.ENOTFOUND {
		return res, err
	}
	res.Elapsed = time.Since(start)
	log.Info("tenant deleted", "databases", res.Databases, "elapsed", res.Elapsed)
	return res, nil
}

func (d *Deleter) setStatus(ctx context.Context, slug string, to registry.Status) (*registry.Tenant, error) {
	return d.Store.UpdateTenant(ctx, slug, func(t *registry.Tenant) error {
		t.Status = to
		t.UpdatedAt = time.Now().UTC()
		return nil
	})
}

// undo puts the tenant back as it was before a delete that did not happen.
func (d *Deleter) undo(ctx context.Context, slug string, prev registry.Status, restart bool) {
	ctx = context.WithoutCancel(ctx)
	if restart && d.Target != nil {
		spec := deploy.AppSpec{Tenant: slug, EnvFile: d.Secrets.File(slug), Env: d.AppEnv}
		if err := d.Target.Start(ctx, spec); err != nil {
			d.logger().Error("delete aborted: restart instance", "tenant", slug, "err", err)
		}
	}
	if prev == registry.StatusDeleting {
		return
	}
	if _, err := d.setStatus(ctx, slug, prev); err != nil {
		d.logger().Error("delete aborted: restore status", "tenant", slug, "status", prev, "err", err)
	}
}
