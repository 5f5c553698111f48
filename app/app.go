// Package app holds StageSub's tenant application domain: staff users,
// musicians, projects and substitute requests, their validation rules, the
// service interfaces the HTTP layer uses, and the application errors.
//
// One process serves exactly one tenant (orchestra) and one database, so no
// type here carries a tenant: isolation is by database. Adapters live in
// subpackages: postgres (the services on pgx), http (HTML pages and the JSON
// API), schema (migrations, stats view). Wiring is in cmd/stagesub-app.
package app

import (
	"context"
	"fmt"
	"time"
)

// Version is the build version, set with -ldflags "-X stagesub.dev/app.Version=...".
var Version = "dev"

// Roles of staff users. Viewers read; staff also write musicians, projects
// and requests; admins also manage users and API tokens.
const (
	RoleAdmin  = "admin"
	RoleStaff  = "staff"
	RoleViewer = "viewer"
)

// User is a staff member of the orchestra who logs in.
type User struct {
	ID        int64     `json:"id"`
	Email     string    `json:"email"`
	Name      string    `json:"name"`
	Role      string    `json:"role"`
	Active    bool      `json:"active"`
	CreatedAt time.Time `json:"created_at"`
}

// CanWrite reports whether u may create and change musicians, projects and
// requests.
func (u *User) CanWrite() bool {
	return u != nil && u.Active && (u.Role == RoleAdmin || u.Role == RoleStaff)
}

// IsAdmin reports whether u may manage users and tokens.
func (u *User) IsAdmin() bool { return u != nil && u.Active && u.Role == RoleAdmin }

type userKey struct{}

// WithUser returns ctx carrying the acting user (for permissions and the
// activity log).
func WithUser(ctx context.Context, u *User) context.Context {
	return context.WithValue(ctx, userKey{}, u)
}

// UserFromContext returns the acting user, nil when anonymous.
func UserFromContext(ctx context.Context) *User {
	u, _ := ctx.Value(userKey{}).(*User)
	return u
}

// Session is a logged-in browser session. Token is only known right after
// creation (the database stores its hash).
type Session struct {
	Token     string
	CSRFToken string
	User      *User
	ExpiresAt time.Time
}

// UserService authenticates staff users and manages sessions and API tokens.
type UserService interface {
	// Authenticate checks email and password; EUNAUTHORIZED when wrong.
	Authenticate(ctx context.Context, email, password string) (*User, error)
	// CreateUser creates a staff user; ECONFLICT when the email exists.
	CreateUser(ctx context.Context, in UserInput) (*User, error)
	// CreateSession starts a session for user u lasting ttl.
	CreateSession(ctx context.Context, u *User, ttl time.Duration) (*Session, error)
	// FindSession returns the live session of token; EUNAUTHORIZED if none.
	FindSession(ctx context.Context, token string) (*Session, error)
	// DeleteSession ends the session of token (logout); no error if none.
	DeleteSession(ctx context.Context, token string) error
	// CreateAPIToken issues a bearer token for u and returns it (shown once).
	CreateAPIToken(ctx context.Context, u *User, name string) (string, error)
	// FindUserByAPIToken returns the active user of token; EUNAUTHORIZED if none.
	FindUserByAPIToken(ctx context.Context, token string) (*User, error)
	// ChangePassword sets a new password for the user in ctx after checking
	// the current one (EINVALID with field "current" when wrong) and ends
	// every other session of that user; the session of keepSession (the
	// caller's own cookie token) stays.
	ChangePassword(ctx context.Context, in PasswordChange, keepSession string) error
	// FindUsers lists every staff user by email; admins only (EFORBIDDEN).
	FindUsers(ctx context.Context) ([]*User, error)
}

// Bounds of a password chosen by a user (in bytes). Older or generated
// passwords may be shorter; these apply when a user sets one.
const (
	MinPasswordLength = 12
	MaxPasswordLength = 1024
)

// PasswordChange is a user's request to replace their password.
type PasswordChange struct {
	Current string // the password now
	New     string
	Confirm string // New typed again
}

// Validate returns an EINVALID *Error with a message per bad field, or nil.
// It does not check Current against the stored hash.
func (in *PasswordChange) Validate() error {
	v := NewValidator()
	if in.Current == "" {
		v.Set("current", "is required")
	}
	switch {
	case len(in.New) < MinPasswordLength || len(in.New) > MaxPasswordLength:
		v.Set("new", fmt.Sprintf("must be %d to %d characters", MinPasswordLength, MaxPasswordLength))
	case in.New == in.Current:
		v.Set("new", "must differ from the current password")
	case in.Confirm != in.New:
		v.Set("confirm", "does not match the new password")
	}
	return v.Err()
}

// UserInput creates a staff user.
type UserInput struct {
	Email    string
	Name     string
	Password string
	Role     string
}

// Validate returns an EINVALID *Error with a message per bad field, or nil.
func (in *UserInput) Validate() error {
	v := NewValidator()
	v.Check("email", ValidateEmail(in.Email, true))
	v.Length("name", in.Name, 0, 200)
	if len(in.Password) < 8 || len(in.Password) > 200 {
		v.Set("password", "must be 8 to 200 characters")
	}
	if in.Role != RoleAdmin && in.Role != RoleStaff && in.Role != RoleViewer {
		v.Set("role", "must be admin, staff or viewer")
	}
	return v.Err()
}

// Page selects a window of a list: Limit rows after Offset.
type Page struct {
	Offset int
	Limit  int
}

// Page limits.
const (
	DefaultLimit = 50
	MaxLimit     = 200
)

// Normalize clamps Limit to 1..MaxLimit (DefaultLimit when 0) and Offset to ≥ 0.
func (p Page) Normalize() Page {
	if p.Limit <= 0 {
		p.Limit = DefaultLimit
	}
	if p.Limit > MaxLimit {
		p.Limit = MaxLimit
	}
	if p.Offset < 0 {
		p.Offset = 0
	}
	return p
}

// Activity is one entry of the activity log.
type Activity struct {
	At      time.Time `json:"at"`
	Actor   string    `json:"actor"`
	Action  string    `json:"action"`
	Subject string    `json:"subject"`
}

// Dashboard is the staff start page's summary.
type Dashboard struct {
	ActiveMusicians  int64
	UpcomingProjects []*Project
	PendingRequests  int64
	Recent           []Activity
}

// DashboardService builds the dashboard.
type DashboardService interface {
	Dashboard(ctx context.Context) (*Dashboard, error)
}
