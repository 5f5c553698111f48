package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"stagesub.dev/app"
)

const (
	requestColumns = `r.id, r.project_id, r.musician_id, r.position, r.message, r.status, r.answer_token,
	r.created_at, r.answered_at, r.updated_at, m.name, m.instrument, p.name, p.starts_on, p.ends_on, p.venue`
	requestFrom   = " FROM requests r JOIN musicians m ON m.id = r.musician_id JOIN projects p ON p.id = r.project_id"
	requestSelect = "SELECT " + requestColumns + requestFrom
)

func scanRequest(row pgx.Row, extra ...any) (*app.Request, error) {
	var r app.Request
	dest := append([]any{&r.ID, &r.ProjectID, &r.MusicianID, &r.Position, &r.Message, &r.Status, &r.AnswerToken,
		&r.CreatedAt, &r.AnsweredAt, &r.UpdatedAt, &r.MusicianName, &r.Instrument, &r.ProjectName,
		&r.ProjectStart.Time, &r.ProjectEnd.Time, &r.Venue}, extra...)
	if err := row.Scan(dest...); err != nil {
		return nil, err
	}
	return &r, nil
}

func findRequest(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, where string, arg any) (*app.Request, error) {
	return scanRequest(q.QueryRow(ctx, requestSelect+" WHERE "+where, arg))
}

// FindRequestByID implements app.RequestService.
func (db *DB) FindRequestByID(ctx context.Context, id int64) (*app.Request, error) {
	if err := requireUser(ctx); err != nil {
		return nil, err
	}
	r, err := findRequest(ctx, db.pool, "r.id = $1", id)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound("Request", id)
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: find request %d: %w", id, err)
	}
	return r, nil
}

// FindRequests implements app.RequestService.
func (db *DB) FindRequests(ctx context.Context, f app.RequestFilter) ([]*app.Request, int, error) {
	if err := requireUser(ctx); err != nil {
		return nil, 0, err
	}
	pg := f.Page.Normalize()
	where := " WHERE ($1 = 0 OR r.project_id = $1) AND ($2 = '' OR r.status = $2)"
	rows, err := db.pool.Query(ctx, "SELECT "+requestColumns+", count(*) OVER ()"+requestFrom+where+
		" ORDER BY r.created_at DESC, r.id DESC LIMIT $3 OFFSET $4", f.ProjectID, f.Status, pg.Limit, pg.Offset)
	if err != nil {
		return nil, 0, fmt.Errorf("postgres: find requests: %w", err)
	}
	defer rows.Close()
	var out []*app.Request
	total := 0
	for rows.Next() {
		r, err := scanRequest(rows, &total)
		if err != nil {
			return nil, 0, fmt.Errorf("postgres: find requests: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("postgres: find requests: %w", err)
	}
	if len(out) == 0 && pg.Offset > 0 {
		if err := db.pool.QueryRow(ctx, "SELECT count(*) FROM requests r"+where, f.ProjectID, f.Status).Scan(&total); err != nil {
			return nil, 0, fmt.Errorf("postgres: count requests: %w", err)
		}
	}
	return out, total, nil
}

// CreateRequest implements app.RequestService.
func (db *DB) CreateRequest(ctx context.Context, in app.RequestInput) (*app.Request, error) {
	if err := requireWriter(ctx); err != nil {
		return nil, err
	}
	if err := in.Validate(); err != nil {
		return nil, err
	}
	var r *app.Request
	err := db.withTx(ctx, func(tx pgx.Tx) error {
		var active bool
		err := tx.QueryRow(ctx, "SELECT active FROM musicians WHERE id = $1 FOR SHARE", in.MusicianID).Scan(&active)
		if errors.Is(err, pgx.ErrNoRows) {
			return &app.Error{Code: app.EINVALID, Message: "Please correct the highlighted fields.", Fields: map[string]string{"musician_id": "no such musician"}}
		}
		if err != nil {
			return fmt.Errorf("postgres: create request: %w", err)
		}
		if !active {
			return &app.Error{Code: app.EINVALID, Message: "Please correct the highlighted fields.", Fields: map[string]string{"musician_id": "musician is not active"}}
		}
		var status string
		err = tx.QueryRow(ctx, "SELECT status FROM projects WHERE id = $1 FOR SHARE", in.ProjectID).Scan(&status)
		if errors.Is(err, pgx.ErrNoRows) {
			return notFound("Project", in.ProjectID)
		}
		if err != nil {
			return fmt.Errorf("postgres: create request: %w", err)
		}
		if status == app.ProjectCancelled || status == app.ProjectCompleted {
			return app.Errorf(app.ECONFLICT, "The project is %s; no new requests.", status)
		}
		var uid *int64
		if u := app.UserFromContext(ctx); u != nil {
			uid = &u.ID
		}
		var id int64
		err = tx.QueryRow(ctx, `
			INSERT INTO requests (project_id, musician_id, position, message, answer_token, created_by)
			VALUES ($1, $2, $3, $4, $5, $6) RETURNING id`,
			in.ProjectID, in.MusicianID, in.Position, in.Message, app.NewToken(), uid).Scan(&id)
		if isUniqueViolation(err, "requests_open_key") {
			return app.Errorf(app.ECONFLICT, "This musician already has an open request for this project.")
		}
		if err != nil {
			return fmt.Errorf("postgres: create request: %w", err)
		}
		if r, err = findRequest(ctx, tx, "r.id = $1", id); err != nil {
			return fmt.Errorf("postgres: create request: %w", err)
		}
		return logActivity(ctx, tx, "", "request.create", fmt.Sprintf("%s → %s, %s (#%d)", r.MusicianName, r.ProjectName, r.Position, r.ID))
	})
	return r, err
}

// CancelRequest implements app.RequestService.
func (db *DB) CancelRequest(ctx context.Context, id int64) (*app.Request, error) {
	if err := requireWriter(ctx); err != nil {
		return nil, err
	}
	var r *app.Request
	err := db.withTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE requests SET status = 'cancelled', updated_at = now()
			WHERE id = $1 AND status IN ('pending', 'accepted')`, id)
		if err != nil {
			return fmt.Errorf("postgres: cancel request %d: %w", id, err)
		}
		r, err = findRequest(ctx, tx, "r.id = $1", id)
		if errors.Is(err, pgx.ErrNoRows) {
			return notFound("Request", id)
		}
		if err != nil {
			return fmt.Errorf("postgres: cancel request %d: %w", id, err)
		}
		if tag.RowsAffected() == 0 {
			return app.Errorf(app.ECONFLICT, "The request is already %s.", r.Status)
		}
		return logActivity(ctx, tx, "", "request.cancel", fmt.Sprintf("%s → %s (#%d)", r.MusicianName, r.ProjectName, r.ID))
	})
	return r, err
}

// FindRequestByToken implements app.RequestService. No login needed.
func (db *DB) FindRequestByToken(ctx context.Context, token string) (*app.Request, error) {
	if !plausibleAnswerToken(token) {
		return nil, errInvalidLink()
	}
	r, err := findRequest(ctx, db.pool, "r.answer_token = $1", token)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, errInvalidLink()
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: find request by token: %w", err)
	}
	return r, nil
}

// AnswerRequest implements app.RequestService. No login needed: the token
// is the credential.
func (db *DB) AnswerRequest(ctx context.Context, token string, accept bool) (*app.Request, error) {
	if !plausibleAnswerToken(token) {
		return nil, errInvalidLink()
	}
	status := app.RequestDeclined
	if accept {
		status = app.RequestAccepted
	}
	var r *app.Request
	err := db.withTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE requests SET status = $2, answered_at = now(), updated_at = now()
			WHERE answer_token = $1 AND status = 'pending'`, token, status)
		if err != nil {
			return fmt.Errorf("postgres: answer request: %w", err)
		}
		r, err = findRequest(ctx, tx, "r.answer_token = $1", token)
		if errors.Is(err, pgx.ErrNoRows) {
			return errInvalidLink()
		}
		if err != nil {
			return fmt.Errorf("postgres: answer request: %w", err)
		}
		if tag.RowsAffected() == 0 {
			return app.Errorf(app.ECONFLICT, "This request is already %s.", r.Status)
		}
		return logActivity(ctx, tx, r.MusicianName, "request."+status, fmt.Sprintf("%s → %s (#%d)", r.MusicianName, r.ProjectName, r.ID))
	})
	return r, err
}

// plausibleAnswerToken reports whether token has an answer token's length;
// others are refused without a query.
func plausibleAnswerToken(token string) bool { return len(token) >= 22 && len(token) <= 100 }

func errInvalidLink() error { return app.Errorf(app.ENOTFOUND, "This link is not valid.") }
