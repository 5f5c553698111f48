package postgres

import (
	"context"
	"fmt"

	"stagesub.dev/app"
)

// Dashboard implements app.DashboardService.
func (db *DB) Dashboard(ctx context.Context) (*app.Dashboard, error) {
	if err := requireUser(ctx); err != nil {
		return nil, err
	}
	d := &app.Dashboard{}
	err := db.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM musicians WHERE active),
		(SELECT count(*) FROM requests WHERE status = 'pending')`).Scan(&d.ActiveMusicians, &d.PendingRequests)
	if err != nil {
		return nil, fmt.Errorf("postgres: dashboard: %w", err)
	}
	rows, err := db.pool.Query(ctx, "SELECT "+projectColumns+" FROM projects WHERE ends_on >= current_date AND status <> 'cancelled' ORDER BY starts_on, id LIMIT 5")
	if err != nil {
		return nil, fmt.Errorf("postgres: dashboard: %w", err)
	}
	for rows.Next() {
		p, err := scanProject(rows)
		if err != nil {
			rows.Close()
			return nil, fmt.Errorf("postgres: dashboard: %w", err)
		}
		d.UpcomingProjects = append(d.UpcomingProjects, p)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: dashboard: %w", err)
	}
	rows, err = db.pool.Query(ctx, "SELECT at, actor, action, subject FROM activity_log ORDER BY at DESC, id DESC LIMIT 10")
	if err != nil {
		return nil, fmt.Errorf("postgres: dashboard: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var a app.Activity
		if err := rows.Scan(&a.At, &a.Actor, &a.Action, &a.Subject); err != nil {
			return nil, fmt.Errorf("postgres: dashboard: %w", err)
		}
		d.Recent = append(d.Recent, a)
	}
	return d, rows.Err()
}
