package postgres

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"stagesub.dev/app"
	"stagesub.dev/app/password"
)

// dummyHash is verified against when the email is unknown, so a wrong email
// takes as long as a wrong password. Computed on first use: argon2 needs
// 7 MiB, which an idle process should not hold.
var dummyHash = sync.OnceValue(func() string {
	h, _ := password.Hash("stagesub-dummy-password")
	return h
})

const userColumns = "u.id, u.email, u.name, u.role, u.active, u.created_at"

func scanUser(row pgx.Row, extra ...any) (*app.User, error) {
	var u app.User
	dest := append([]any{&u.ID, &u.Email, &u.Name, &u.Role, &u.Active, &u.CreatedAt}, extra...)
	if err := row.Scan(dest...); err != nil {
		return nil, err
	}
	return &u, nil
}

// Authenticate implements app.UserService.
func (db *DB) Authenticate(ctx context.Context, email, pw string) (*app.User, error) {
	var hash string
	u, err := scanUser(db.pool.QueryRow(ctx,
		"SELECT "+userColumns+", u.password_hash FROM users u WHERE lower(u.email) = lower($1)",
		strings.TrimSpace(email)), &hash)
	if errors.Is(err, pgx.ErrNoRows) {
		_ = password.Verify(dummyHash(), pw)
		return nil, app.Errorf(app.EUNAUTHORIZED, "Wrong email or password.")
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: authenticate: %w", err)
	}
	if err := password.Verify(hash, pw); err != nil {
		if errors.Is(err, password.ErrMismatch) {
			return nil, app.Errorf(app.EUNAUTHORIZED, "Wrong email or password.")
		}
		return nil, fmt.Errorf("postgres: authenticate %d: %w", u.ID, err)
	}
	if !u.Active {
		return nil, app.Errorf(app.EUNAUTHORIZED, "This account is disabled.")
	}
	return u, nil
}

// CreateUser implements app.UserService. It needs an admin in ctx, except
// for the very first user of the database.
func (db *DB) CreateUser(ctx context.Context, in app.UserInput) (*app.User, error) {
	in.Email = strings.TrimSpace(in.Email)
	if err := in.Validate(); err != nil {
		return nil, err
	}
	hash, err := password.Hash(in.Password)
	if err != nil {
		return nil, err
	}
	var u *app.User
	err = db.withTx(ctx, func(tx pgx.Tx) error {
		if cu := app.UserFromContext(ctx); !cu.IsAdmin() {
			var n int
			if err := tx.QueryRow(ctx, "SELECT count(*) FROM users").Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				return app.Errorf(app.EFORBIDDEN, "Only administrators may add users.")
			}
		}
		var err error
		u, err = scanUser(tx.QueryRow(ctx, `
			INSERT INTO users AS u (email, name, password_hash, role) VALUES ($1, $2, $3, $4)
			RETURNING `+userColumns, in.Email, in.Name, hash, in.Role))
		if isUniqueViolation(err, "users_email_key") {
			return &app.Error{Code: app.ECONFLICT, Message: "A user with this email exists.", Fields: map[string]string{"email": "is already taken"}}
		}
		if err != nil {
			return fmt.Errorf("postgres: create user: %w", err)
		}
		return logActivity(ctx, tx, "", "user.create", u.Email)
	})
	return u, err
}

// CreateSession implements app.UserService.
func (db *DB) CreateSession(ctx context.Context, u *app.User, ttl time.Duration) (*app.Session, error) {
	s := &app.Session{Token: app.NewToken(), CSRFToken: app.NewToken(), User: u, ExpiresAt: db.Now().Add(ttl).UTC()}
	err := db.withTx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "INSERT INTO sessions (token_hash, user_id, csrf_token, expires_at) VALUES ($1, $2, $3, $4)",
			hashToken(s.Token), u.ID, s.CSRFToken, s.ExpiresAt)
		if err != nil {
			return fmt.Errorf("postgres: create session: %w", err)
		}
		return logActivity(app.WithUser(ctx, u), tx, "", "user.login", u.Email)
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// FindSession implements app.UserService.
func (db *DB) FindSession(ctx context.Context, token string) (*app.Session, error) {
	if token == "" {
		return nil, app.Errorf(app.EUNAUTHORIZED, "Please log in.")
	}
	s := &app.Session{Token: token}
	u, err := scanUser(db.pool.QueryRow(ctx, `
		SELECT `+userColumns+`, s.csrf_token, s.expires_at FROM sessions s JOIN users u ON u.id = s.user_id
		WHERE s.token_hash = $1 AND s.expires_at > $2 AND u.active`, hashToken(token), db.Now()),
		&s.CSRFToken, &s.ExpiresAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, app.Errorf(app.EUNAUTHORIZED, "Your session has ended; please log in again.")
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: find session: %w", err)
	}
	s.User = u
	return s, nil
}

// DeleteSession implements app.UserService.
func (db *DB) DeleteSession(ctx context.Context, token string) error {
	if _, err := db.pool.Exec(ctx, "DELETE FROM sessions WHERE token_hash = $1", hashToken(token)); err != nil {
		return fmt.Errorf("postgres: delete session: %w", err)
	}
	return nil
}

// APITokenPrefix starts every API token, so leaked tokens are recognizable.
const APITokenPrefix = "sst_"

// CreateAPIToken implements app.UserService. Users may create tokens for
// themselves; admins for anyone.
func (db *DB) CreateAPIToken(ctx context.Context, u *app.User, name string) (string, error) {
	cu := app.UserFromContext(ctx)
	if cu == nil || (cu.ID != u.ID && !cu.IsAdmin()) {
		return "", app.Errorf(app.EFORBIDDEN, "You may only create tokens for yourself.")
	}
	if msg := app.CheckText(name, 0, 100); msg != "" {
		return "", &app.Error{Code: app.EINVALID, Message: "Please correct the highlighted fields.", Fields: map[string]string{"name": msg}}
	}
	token := APITokenPrefix + app.NewToken()
	err := db.withTx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "INSERT INTO api_tokens (token_hash, user_id, name) VALUES ($1, $2, $3)", hashToken(token), u.ID, name)
		if err != nil {
			return fmt.Errorf("postgres: create api token: %w", err)
		}
		return logActivity(ctx, tx, "", "token.create", u.Email)
	})
	return token, err
}

// FindUserByAPIToken implements app.UserService.
func (db *DB) FindUserByAPIToken(ctx context.Context, token string) (*app.User, error) {
	if !strings.HasPrefix(token, APITokenPrefix) || subtle.ConstantTimeEq(int32(len(token)), int32(len(APITokenPrefix)+43)) != 1 {
		return nil, app.Errorf(app.EUNAUTHORIZED, "Invalid API token.")
	}
	u, err := scanUser(db.pool.QueryRow(ctx, `
		WITH hit AS (
			SELECT t.id AS token_id, t.last_used_at, u.* FROM api_tokens t JOIN users u ON u.id = t.user_id
			WHERE t.token_hash = $1 AND u.active
		), touch AS (
			UPDATE api_tokens SET last_used_at = now()
			WHERE id IN (SELECT token_id FROM hit WHERE last_used_at IS NULL OR last_used_at < now() - interval '1 minute')
		)
		SELECT `+userColumns+` FROM hit u`, hashToken(token)))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, app.Errorf(app.EUNAUTHORIZED, "Invalid API token.")
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: find api token: %w", err)
	}
	return u, nil
}

// ChangePassword implements app.UserService. The new hash is stored only if
// the stored hash is still the one the current password was checked
// against (a concurrent change wins; this one gets ECONFLICT). In the same
// transaction every other session of the user is deleted and the change is
// logged as "user.password". API tokens are not touched.
func (db *DB) ChangePassword(ctx context.Context, in app.PasswordChange, keepSession string) error {
	u := app.UserFromContext(ctx)
	if u == nil {
		return app.Errorf(app.EUNAUTHORIZED, "Please log in.")
	}
	if err := in.Validate(); err != nil {
		return err
	}
	var old string
	err := db.pool.QueryRow(ctx, "SELECT password_hash FROM users WHERE id = $1 AND active", u.ID).Scan(&old)
	if errors.Is(err, pgx.ErrNoRows) {
		return app.Errorf(app.EUNAUTHORIZED, "Your session has ended; please log in again.")
	}
	if err != nil {
		return fmt.Errorf("postgres: change password %d: %w", u.ID, err)
	}
	if err := password.Verify(old, in.Current); err != nil {
		if errors.Is(err, password.ErrMismatch) {
			return &app.Error{Code: app.EINVALID, Message: "Please correct the highlighted fields.",
				Fields: map[string]string{"current": "is not your current password"}}
		}
		return fmt.Errorf("postgres: change password %d: %w", u.ID, err)
	}
	hash, err := password.Hash(in.New)
	if err != nil {
		return fmt.Errorf("postgres: change password %d: %w", u.ID, err)
	}
	return db.withTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, "UPDATE users SET password_hash = $1, updated_at = now() WHERE id = $2 AND password_hash = $3",
			hash, u.ID, old)
		if err != nil {
			return fmt.Errorf("postgres: change password %d: %w", u.ID, err)
		}
		if tag.RowsAffected() != 1 {
			return app.Errorf(app.ECONFLICT, "Your password was changed meanwhile; please try again.")
		}
		if _, err := tx.Exec(ctx, "DELETE FROM sessions WHERE user_id = $1 AND token_hash <> $2", u.ID, hashToken(keepSession)); err != nil {
			return fmt.Errorf("postgres: end other sessions of %d: %w", u.ID, err)
		}
		return logActivity(ctx, tx, "", "user.password", u.Email)
	})
}

// FindUsers implements app.UserService.
func (db *DB) FindUsers(ctx context.Context) ([]*app.User, error) {
	if !app.UserFromContext(ctx).IsAdmin() {
		return nil, app.Errorf(app.EFORBIDDEN, "Only administrators may manage users.")
	}
	rows, err := db.pool.Query(ctx, "SELECT "+userColumns+" FROM users u ORDER BY lower(u.email)")
	if err != nil {
		return nil, fmt.Errorf("postgres: find users: %w", err)
	}
	defer rows.Close()
	var users []*app.User
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, fmt.Errorf("postgres: find users: %w", err)
		}
		users = append(users, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: find users: %w", err)
	}
	return users, nil
}
