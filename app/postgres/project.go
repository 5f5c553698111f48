package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"stagesub.dev/app"
)

const projectColumns = "id, name, starts_on, ends_on, venue, description, status, created_at, updated_at"

func scanProject(row pgx.Row, extra ...any) (*app.Project, error) {
	var p app.Project
	dest := append([]any{&p.ID, &p.Name, &p.StartsOn.Time, &p.EndsOn.Time, &p.Venue, &p.Description, &p.Status, &p.CreatedAt, &p.UpdatedAt}, extra...)
	if err := row.Scan(dest...); err != nil {
		return nil, err
	}
	return &p, nil
}

// FindProjectByID implements app.ProjectService.
func (db *DB) FindProjectByID(ctx context.Context, id int64) (*app.Project, error) {
	if err := requireUser(ctx); err != nil {
		return nil, err
	}
	p, err := scanProject(db.pool.QueryRow(ctx, "SELECT "+projectColumns+" FROM projects WHERE id = $1", id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound("Project", id)
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: find project %d: %w", id, err)
	}
	return p, nil
}

// FindProjects implements app.ProjectService.
func (db *DB) FindProjects(ctx context.Context, f app.ProjectFilter) ([]*app.Project, int, error) {
	if err := requireUser(ctx); err != nil {
		return nil, 0, err
	}
	pg := f.Page.Normalize()
	rows, err := db.pool.Query(ctx, "SELECT "+projectColumns+", count(*) OVER () FROM projects ORDER BY starts_on DESC, id DESC LIMIT $1 OFFSET $2",
		pg.Limit, pg.Offset)
	if err != nil {
		return nil, 0, fmt.Errorf("postgres: find projects: %w", err)
	}
	defer rows.Close()
	var out []*app.Project
	total := 0
	for rows.Next() {
		p, err := scanProject(rows, &total)
		if err != nil {
			return nil, 0, fmt.Errorf("postgres: find projects: %w", err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("postgres: find projects: %w", err)
	}
	if len(out) == 0 && pg.Offset > 0 {
		if err := db.pool.QueryRow(ctx, "SELECT count(*) FROM projects").Scan(&total); err != nil {
			return nil, 0, fmt.Errorf("postgres: count projects: %w", err)
		}
	}
	return out, total, nil
}

// CreateProject implements app.ProjectService.
func (db *DB) CreateProject(ctx context.Context, in app.ProjectInput) (*app.Project, error) {
	return db.writeProject(ctx, in, "project.create", "create project", `
		INSERT INTO projects (name, starts_on, ends_on, venue, description, status) VALUES ($1, $2, $3, $4, $5, $6)`)
}

// UpdateProject implements app.ProjectService.
func (db *DB) UpdateProject(ctx context.Context, id int64, in app.ProjectInput) (*app.Project, error) {
	p, err := db.writeProject(ctx, in, "project.update", fmt.Sprintf("update project %d", id), `
		UPDATE projects SET name = $1, starts_on = $2, ends_on = $3, venue = $4, description = $5, status = $6, updated_at = now()
		WHERE id = $7`, id)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound("Project", id)
	}
	return p, err
}

// writeProject checks the writer and in, then in one transaction runs query
// (parameters: in's six fields, then extra) with RETURNING projectColumns
// and logs action; what names the write in errors.
func (db *DB) writeProject(ctx context.Context, in app.ProjectInput, action, what, query string, extra ...any) (*app.Project, error) {
	if err := requireWriter(ctx); err != nil {
		return nil, err
	}
	in.Normalize()
	starts, ends, err := in.Validate()
	if err != nil {
		return nil, err
	}
	args := append([]any{in.Name, starts.Time, ends.Time, in.Venue, in.Description, in.Status}, extra...)
	var p *app.Project
	err = db.withTx(ctx, func(tx pgx.Tx) error {
		var err error
		p, err = scanProject(tx.QueryRow(ctx, query+" RETURNING "+projectColumns, args...))
		if err != nil {
			return fmt.Errorf("postgres: %s: %w", what, err)
		}
		return logActivity(ctx, tx, "", action, fmt.Sprintf("%s (#%d)", p.Name, p.ID))
	})
	return p, err
}
