package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"stagesub.dev/app"
)

const musicianColumns = "id, name, instrument, email, phone, notes, active, created_at, updated_at"

func scanMusician(row pgx.Row, extra ...any) (*app.Musician, error) {
	var m app.Musician
	dest := append([]any{&m.ID, &m.Name, &m.Instrument, &m.Email, &m.Phone, &m.Notes, &m.Active, &m.CreatedAt, &m.UpdatedAt}, extra...)
	if err := row.Scan(dest...); err != nil {
		return nil, err
	}
	return &m, nil
}

func notFound(what string, id int64) error {
	return app.Errorf(app.ENOTFOUND, "%s %d not found.", what, id)
}

// FindMusicianByID implements app.MusicianService.
func (db *DB) FindMusicianByID(ctx context.Context, id int64) (*app.Musician, error) {
	if err := requireUser(ctx); err != nil {
		return nil, err
	}
	m, err := scanMusician(db.pool.QueryRow(ctx, "SELECT "+musicianColumns+" FROM musicians WHERE id = $1", id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound("Musician", id)
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: find musician %d: %w", id, err)
	}
	return m, nil
}

// FindMusicians implements app.MusicianService.
func (db *DB) FindMusicians(ctx context.Context, f app.MusicianFilter) ([]*app.Musician, int, error) {
	if err := requireUser(ctx); err != nil {
		return nil, 0, err
	}
	p := f.Page.Normalize()
	where := `($1 = '' OR strpos(lower(name), lower($1)) > 0 OR strpos(lower(instrument), lower($1)) > 0) AND (NOT $2 OR active)`
	rows, err := db.pool.Query(ctx, "SELECT "+musicianColumns+", count(*) OVER () FROM musicians WHERE "+where+
		" ORDER BY lower(name), id LIMIT $3 OFFSET $4", f.Query, f.ActiveOnly, p.Limit, p.Offset)
	if err != nil {
		return nil, 0, fmt.Errorf("postgres: find musicians: %w", err)
	}
	defer rows.Close()
	var out []*app.Musician
	total := 0
	for rows.Next() {
		m, err := scanMusician(rows, &total)
		if err != nil {
			return nil, 0, fmt.Errorf("postgres: find musicians: %w", err)
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("postgres: find musicians: %w", err)
	}
	if len(out) == 0 && p.Offset > 0 {
		if err := db.pool.QueryRow(ctx, "SELECT count(*) FROM musicians WHERE "+where, f.Query, f.ActiveOnly).Scan(&total); err != nil {
			return nil, 0, fmt.Errorf("postgres: count musicians: %w", err)
		}
	}
	return out, total, nil
}

// CreateMusician implements app.MusicianService.
func (db *DB) CreateMusician(ctx context.Context, in app.MusicianInput) (*app.Musician, error) {
	if err := requireWriter(ctx); err != nil {
		return nil, err
	}
	in.Normalize()
	if err := in.Validate(); err != nil {
		return nil, err
	}
	active := in.Active == nil || *in.Active
	var m *app.Musician
	err := db.withTx(ctx, func(tx pgx.Tx) error {
		var err error
		m, err = scanMusician(tx.QueryRow(ctx, `
			INSERT INTO musicians (name, instrument, email, phone, notes, active) VALUES ($1, $2, $3, $4, $5, $6)
			RETURNING `+musicianColumns, in.Name, in.Instrument, in.Email, in.Phone, in.Notes, active))
		if err != nil {
			return fmt.Errorf("postgres: create musician: %w", err)
		}
		return logActivity(ctx, tx, "", "musician.create", fmt.Sprintf("%s (#%d)", m.Name, m.ID))
	})
	return m, err
}

// UpdateMusician implements app.MusicianService.
func (db *DB) UpdateMusician(ctx context.Context, id int64, in app.MusicianInput) (*app.Musician, error) {
	if err := requireWriter(ctx); err != nil {
		return nil, err
	}
	in.Normalize()
	if err := in.Validate(); err != nil {
		return nil, err
	}
	var m *app.Musician
	err := db.withTx(ctx, func(tx pgx.Tx) error {
		var err error
		m, err = scanMusician(tx.QueryRow(ctx, `
			UPDATE musicians SET name = $2, instrument = $3, email = $4, phone = $5, notes = $6,
				active = coalesce($7, active), updated_at = now()
			WHERE id = $1 RETURNING `+musicianColumns, id, in.Name, in.Instrument, in.Email, in.Phone, in.Notes, in.Active))
		if errors.Is(err, pgx.ErrNoRows) {
			return notFound("Musician", id)
		}
		if err != nil {
			return fmt.Errorf("postgres: update musician %d: %w", id, err)
		}
		return logActivity(ctx, tx, "", "musician.update", fmt.Sprintf("%s (#%d)", m.Name, m.ID))
	})
	return m, err
}

// DeactivateMusician implements app.MusicianService.
func (db *DB) DeactivateMusician(ctx context.Context, id int64) (*app.Musician, error) {
	if err := requireWriter(ctx); err != nil {
		return nil, err
	}
	var m *app.Musician
	err := db.withTx(ctx, func(tx pgx.Tx) error {
		var err error
		m, err = scanMusician(tx.QueryRow(ctx,
			"UPDATE musicians SET active = false, updated_at = now() WHERE id = $1 RETURNING "+musicianColumns, id))
		if errors.Is(err, pgx.ErrNoRows) {
			return notFound("Musician", id)
		}
		if err != nil {
			return fmt.Errorf("postgres: deactivate musician %d: %w", id, err)
		}
		return logActivity(ctx, tx, "", "musician.deactivate", fmt.Sprintf("%s (#%d)", m.Name, m.ID))
	})
	return m, err
}
