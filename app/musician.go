package app

import (
	"context"
	"strings"
	"time"
)

// Musician is a substitute musician the orchestra can ask to play.
type Musician struct {
	ID         int64     `json:"id"`
	Name       string    `json:"name"`
	Instrument string    `json:"instrument"`
	Email      string    `json:"email"`
	Phone      string    `json:"phone"`
	Notes      string    `json:"notes"`
	Active     bool      `json:"active"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
}

// MusicianInput creates or replaces a musician's editable fields.
type MusicianInput struct {
	Name       string `json:"name"`
	Instrument string `json:"instrument"`
	Email      string `json:"email"`
	Phone      string `json:"phone"`
	Notes      string `json:"notes"`
	Active     *bool  `json:"active"` // nil: true on create, unchanged on update
}

// Normalize trims surrounding spaces of the one-line fields.
func (in *MusicianInput) Normalize() {
	in.Name = strings.TrimSpace(in.Name)
	in.Instrument = strings.TrimSpace(in.Instrument)
	in.Email = strings.TrimSpace(in.Email)
	in.Phone = strings.TrimSpace(in.Phone)
}

// Validate returns an EINVALID *Error with a message per bad field, or nil.
func (in *MusicianInput) Validate() error {
	v := NewValidator()
	v.Length("name", in.Name, 1, 200)
	v.Length("instrument", in.Instrument, 1, 100)
	v.Check("email", ValidateEmail(in.Email, false))
	v.Check("phone", ValidatePhone(in.Phone))
	v.Length("notes", in.Notes, 0, 4000)
	return v.Err()
}

// MusicianFilter selects musicians. Query matches name or instrument
// (case-insensitive substring).
type MusicianFilter struct {
	Query      string
	ActiveOnly bool
	Page
}

// MusicianService manages musicians. Write methods need a user who CanWrite
// in ctx (EFORBIDDEN otherwise) and log the activity.
type MusicianService interface {
	FindMusicianByID(ctx context.Context, id int64) (*Musician, error)
	// FindMusicians returns one page sorted by name, id and the total count.
	FindMusicians(ctx context.Context, f MusicianFilter) ([]*Musician, int, error)
	CreateMusician(ctx context.Context, in MusicianInput) (*Musician, error)
	UpdateMusician(ctx context.Context, id int64, in MusicianInput) (*Musician, error)
	// DeactivateMusician marks the musician inactive (never deleted: requests refer to it).
	DeactivateMusician(ctx context.Context, id int64) (*Musician, error)
}
