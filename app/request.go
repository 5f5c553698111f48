package app

import (
	"context"
	"strings"
	"time"
)

// Request statuses. A request starts pending; the musician accepts or
// declines it once through the answer link; staff may cancel a pending or
// accepted request.
const (
	RequestPending   = "pending"
	RequestAccepted  = "accepted"
	RequestDeclined  = "declined"
	RequestCancelled = "cancelled"
)

// Request asks a musician to play a position in a project.
type Request struct {
	ID          int64      `json:"id"`
	ProjectID   int64      `json:"project_id"`
	MusicianID  int64      `json:"musician_id"`
	Position    string     `json:"position"`
	Message     string     `json:"message"`
	Status      string     `json:"status"`
	AnswerToken string     `json:"-"` // random, ≥128 bits; the answer link's secret
	CreatedAt   time.Time  `json:"created_at"`
	AnsweredAt  *time.Time `json:"answered_at"`
	UpdatedAt   time.Time  `json:"updated_at"`

	// Joined for display.
	MusicianName string `json:"musician_name"`
	Instrument   string `json:"instrument"`
	ProjectName  string `json:"project_name"`
	ProjectStart Date   `json:"project_starts_on"`
	ProjectEnd   Date   `json:"project_ends_on"`
	Venue        string `json:"venue"`
}

// RequestInput creates a request.
type RequestInput struct {
	ProjectID  int64  `json:"project_id"`
	MusicianID int64  `json:"musician_id"`
	Position   string `json:"position"`
	Message    string `json:"message"`
}

// Validate returns an EINVALID *Error with a message per bad field, or nil.
func (in *RequestInput) Validate() error {
	in.Position = strings.TrimSpace(in.Position)
	v := NewValidator()
	if in.ProjectID <= 0 {
		v.Set("project_id", "is required")
	}
	if in.MusicianID <= 0 {
		v.Set("musician_id", "is required")
	}
	v.Length("position", in.Position, 1, 100)
	v.Length("message", in.Message, 0, 2000)
	return v.Err()
}

// RequestFilter selects requests (0 = any project, "" = any status).
type RequestFilter struct {
	ProjectID int64
	Status    string
	Page
}

// RequestService manages substitute requests.
type RequestService interface {
	FindRequestByID(ctx context.Context, id int64) (*Request, error)
	FindRequests(ctx context.Context, f RequestFilter) ([]*Request, int, error)
	// CreateRequest needs CanWrite; the musician must be active (EINVALID)
	// and not already have an open request for the project (ECONFLICT).
	CreateRequest(ctx context.Context, in RequestInput) (*Request, error)
	// CancelRequest needs CanWrite; only pending or accepted requests.
	CancelRequest(ctx context.Context, id int64) (*Request, error)
	// FindRequestByToken returns the request of an answer link; ENOTFOUND
	// for an unknown token.
	FindRequestByToken(ctx context.Context, token string) (*Request, error)
	// AnswerRequest accepts (true) or declines a pending request by its
	// token, without login; ECONFLICT when it is no longer pending.
	AnswerRequest(ctx context.Context, token string, accept bool) (*Request, error)
}
