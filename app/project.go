package app

import (
	"context"
	"strings"
	"time"
)

// Project statuses.
const (
	ProjectPlanned   = "planned"
	ProjectConfirmed = "confirmed"
	ProjectCompleted = "completed"
	ProjectCancelled = "cancelled"
)

// ProjectStatuses lists the valid project statuses in display order.
var ProjectStatuses = []string{ProjectPlanned, ProjectConfirmed, ProjectCompleted, ProjectCancelled}

// DateLayout is the format of project dates in forms and JSON.
const DateLayout = "2006-01-02"

// Project is a production (concert, tour, recording) with its dates.
type Project struct {
	ID          int64     `json:"id"`
	Name        string    `json:"name"`
	StartsOn    Date      `json:"starts_on"`
	EndsOn      Date      `json:"ends_on"`
	Venue       string    `json:"venue"`
	Description string    `json:"description"`
	Status      string    `json:"status"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// Date is a calendar date (UTC midnight) encoded as "YYYY-MM-DD".
type Date struct{ time.Time }

// ParseDate parses "YYYY-MM-DD".
func ParseDate(s string) (Date, error) {
	t, err := time.Parse(DateLayout, s)
	return Date{t}, err
}

func (d Date) String() string {
	if d.IsZero() {
		return ""
	}
	return d.Format(DateLayout)
}

// MarshalJSON encodes "YYYY-MM-DD".
func (d Date) MarshalJSON() ([]byte, error) { return []byte(`"` + d.String() + `"`), nil }

// UnmarshalJSON decodes "YYYY-MM-DD" ("" or null: the zero Date).
func (d *Date) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	if s == "" || s == "null" {
		*d = Date{}
		return nil
	}
	t, err := ParseDate(s)
	if err != nil {
		return err
	}
	*d = t
	return nil
}

// ProjectInput creates or replaces a project's editable fields. Dates are
// strings so that bad input becomes a field message, not a decode error.
type ProjectInput struct {
	Name        string `json:"name"`
	StartsOn    string `json:"starts_on"`
	EndsOn      string `json:"ends_on"`
	Venue       string `json:"venue"`
	Description string `json:"description"`
	Status      string `json:"status"` // "" = planned
}

// Normalize trims the one-line fields and defaults the status.
func (in *ProjectInput) Normalize() {
	in.Name = strings.TrimSpace(in.Name)
	in.StartsOn = strings.TrimSpace(in.StartsOn)
	in.EndsOn = strings.TrimSpace(in.EndsOn)
	in.Venue = strings.TrimSpace(in.Venue)
	if in.Status == "" {
		in.Status = ProjectPlanned
	}
}

// Validate returns the parsed dates, or an EINVALID *Error with a message
// per bad field.
func (in *ProjectInput) Validate() (starts, ends Date, err error) {
	v := NewValidator()
	v.Length("name", in.Name, 1, 200)
	v.Length("venue", in.Venue, 0, 200)
	v.Length("description", in.Description, 0, 4000)
	starts, err1 := ParseDate(in.StartsOn)
	if in.StartsOn == "" {
		v.Set("starts_on", "is required")
	} else if err1 != nil {
		v.Set("starts_on", "must be a date like 2026-03-14")
	}
	ends, err2 := ParseDate(in.EndsOn)
	if in.EndsOn == "" {
		v.Set("ends_on", "is required")
	} else if err2 != nil {
		v.Set("ends_on", "must be a date like 2026-03-14")
	}
	if err1 == nil && err2 == nil && ends.Before(starts.Time) {
		v.Set("ends_on", "must not be before the start date")
	}
	if err1 == nil && (starts.Year() < 1900 || starts.Year() > 2200) {
		v.Set("starts_on", "must be between 1900 and 2200")
	}
	if err2 == nil && (ends.Year() < 1900 || ends.Year() > 2200) {
		v.Set("ends_on", "must be between 1900 and 2200")
	}
	ok := false
	for _, s := range ProjectStatuses {
		ok = ok || in.Status == s
	}
	if !ok {
		v.Set("status", "must be one of planned, confirmed, completed, cancelled")
	}
	return starts, ends, v.Err()
}

// ProjectFilter selects projects, sorted by start date, newest first.
type ProjectFilter struct {
	Page
}

// ProjectService manages projects. Write methods need a user who CanWrite.
type ProjectService interface {
	FindProjectByID(ctx context.Context, id int64) (*Project, error)
	FindProjects(ctx context.Context, f ProjectFilter) ([]*Project, int, error)
	CreateProject(ctx context.Context, in ProjectInput) (*Project, error)
	UpdateProject(ctx context.Context, id int64, in ProjectInput) (*Project, error)
}
