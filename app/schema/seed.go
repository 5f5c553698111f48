package schema

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"stagesub.dev/app"
)

// SeedOptions sizes the demo data.
type SeedOptions struct {
	Musicians int // default 40
	Projects  int // default 6
	Requests  int // pending requests on the first project, default 3
}

var (
	demoFirst       = []string{"Anna", "Erik", "Maria", "Johan", "Karin", "Lars", "Sofia", "Nils", "Eva", "Per", "Ingrid", "Olof"}
	demoLast        = []string{"Lindqvist", "Berg", "Nyström", "Holm", "Sandberg", "Ek", "Wallin", "Lund", "Björk", "Forsberg", "Åberg"}
	demoInstruments = []string{"violin", "viola", "cello", "double bass", "flute", "oboe", "clarinet", "bassoon", "horn", "trumpet", "trombone", "tuba", "timpani", "percussion", "harp"}
	demoVenues      = []string{"Konserthuset", "Stora salen", "Domkyrkan", "Operan"}
)

// SeedDemo inserts sample musicians (emails demo-N@example.org), projects
// ("Demo project N") and pending requests. It is idempotent: rows that
// exist (by email, name, or project and musician) are left alone, so
// running it twice changes nothing.
func SeedDemo(ctx context.Context, db *sql.DB, o SeedOptions) error {
	if o.Musicians <= 0 {
		o.Musicians = 40
	}
	if o.Projects <= 0 {
		o.Projects = 6
	}
	if o.Requests <= 0 {
		o.Requests = 3
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("schema: seed: %w", err)
	}
	defer tx.Rollback()
	for i := 1; i <= o.Musicians; i++ {
		name := demoFirst[i%len(demoFirst)] + " " + demoLast[(i/len(demoFirst)+i)%len(demoLast)]
		_, err := tx.ExecContext(ctx, `
			INSERT INTO musicians (name, instrument, email, phone, notes)
			SELECT $1, $2, $3, $4, 'demo data'
			WHERE NOT EXISTS (SELECT 1 FROM musicians WHERE email = $3)`,
			fmt.Sprintf("%s %d", name, i), demoInstruments[i%len(demoInstruments)],
			fmt.Sprintf("demo-%d@example.org", i), fmt.Sprintf("+46 70 %03d %02d %02d", i%1000, i%100, (i*7)%100))
		if err != nil {
			return fmt.Errorf("schema: seed musician %d: %w", i, err)
		}
	}
	base := time.Date(time.Now().Year()+1, time.January, 10, 0, 0, 0, 0, time.UTC)
	for i := 1; i <= o.Projects; i++ {
		start := base.AddDate(0, i, 0)
		_, err := tx.ExecContext(ctx, `
			INSERT INTO projects (name, starts_on, ends_on, venue, description, status)
			SELECT $1, $2, $3, $4, 'demo data', 'planned'
			WHERE NOT EXISTS (SELECT 1 FROM projects WHERE name = $1)`,
			fmt.Sprintf("Demo project %d", i), start, start.AddDate(0, 0, 3), demoVenues[i%len(demoVenues)])
		if err != nil {
			return fmt.Errorf("schema: seed project %d: %w", i, err)
		}
	}
	for i := 1; i <= o.Requests && i <= o.Musicians; i++ {
		_, err := tx.ExecContext(ctx, `
			INSERT INTO requests (project_id, musician_id, position, answer_token)
			SELECT p.id, m.id, m.instrument, $2
			FROM projects p, musicians m
			WHERE p.name = 'Demo project 1' AND m.email = $1
			  AND NOT EXISTS (SELECT 1 FROM requests r WHERE r.project_id = p.id AND r.musician_id = m.id)`,
			fmt.Sprintf("demo-%d@example.org", i), app.NewToken())
		if err != nil {
			return fmt.Errorf("schema: seed request %d: %w", i, err)
		}
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO activity_log (actor, action, subject) VALUES ('seed', 'demo.seed', 'demo data')"); err != nil {
		return fmt.Errorf("schema: seed: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("schema: seed: %w", err)
	}
	return nil
}
