package app_test

import (
	"strings"
	"testing"

	"stagesub.dev/app"
)

func TestValidateEmail(t *testing.T) {
	tests := []struct {
		in       string
		required bool
		ok       bool
	}{
		{"anna@example.org", true, true},
		{"", false, true},
		{"", true, false},
		{"anna", false, false},
		{"anna@localhost", false, false},
		{"Anna <anna@example.org>", false, false},
		{"a@b.", false, false},
		{strings.Repeat("a", 250) + "@example.org", false, false},
	}
	for _, tt := range tests {
		if got := app.ValidateEmail(tt.in, tt.required) == ""; got != tt.ok {
			t.Errorf("ValidateEmail(%q, %v) ok = %v, want %v", tt.in, tt.required, got, tt.ok)
		}
	}
}

func TestValidatePhone(t *testing.T) {
	tests := []struct {
		in string
		ok bool
	}{
		{"", true},
		{"+46 70 123 45 67", true},
		{"(031) 726-53-00", true},
		{"call me", false},
		{"1234", false},
		{"+-()  ", false},
		{strings.Repeat("1", 31), false},
	}
	for _, tt := range tests {
		if got := app.ValidatePhone(tt.in) == ""; got != tt.ok {
			t.Errorf("ValidatePhone(%q) ok = %v, want %v", tt.in, got, tt.ok)
		}
	}
}

func TestProjectInputValidate(t *testing.T) {
	tests := []struct {
		name   string
		in     app.ProjectInput
		fields []string
	}{
		{"OK", app.ProjectInput{Name: "P", StartsOn: "2027-01-01", EndsOn: "2027-01-01"}, nil},
		{"ErrRequired", app.ProjectInput{}, []string{"name", "starts_on", "ends_on"}},
		{"ErrDates", app.ProjectInput{Name: "P", StartsOn: "2027-02-30", EndsOn: "tomorrow"}, []string{"starts_on", "ends_on"}},
		{"ErrOrder", app.ProjectInput{Name: "P", StartsOn: "2027-01-02", EndsOn: "2027-01-01"}, []string{"ends_on"}},
		{"ErrYear", app.ProjectInput{Name: "P", StartsOn: "0001-01-01", EndsOn: "9999-01-01"}, []string{"starts_on", "ends_on"}},
		{"ErrStatus", app.ProjectInput{Name: "P", StartsOn: "2027-01-01", EndsOn: "2027-01-01", Status: "done"}, []string{"status"}},
		{"ErrControl", app.ProjectInput{Name: "P\x00", StartsOn: "2027-01-01", EndsOn: "2027-01-01"}, []string{"name"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := tt.in
			in.Normalize()
			_, _, err := in.Validate()
			fields := app.ErrorFields(err)
			if got, want := len(fields), len(tt.fields); got != want {
				t.Errorf("fields = %v, want %v", fields, tt.fields)
			}
			for _, f := range tt.fields {
				if fields[f] == "" {
					t.Errorf("no message for %q in %v", f, fields)
				}
			}
			if tt.fields != nil && app.ErrorCode(err) != app.EINVALID {
				t.Errorf("code = %q, want invalid", app.ErrorCode(err))
			}
		})
	}
}

func TestPageNormalize(t *testing.T) {
	tests := []struct{ in, want app.Page }{
		{app.Page{}, app.Page{Limit: app.DefaultLimit}},
		{app.Page{Offset: -5, Limit: 1000}, app.Page{Limit: app.MaxLimit}},
		{app.Page{Offset: 10, Limit: 5}, app.Page{Offset: 10, Limit: 5}},
	}
	for _, tt := range tests {
		if got := tt.in.Normalize(); got != tt.want {
			t.Errorf("%+v.Normalize() = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func TestNewToken(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 100; i++ {
		tok := app.NewToken()
		if len(tok) != 43 || strings.ContainsAny(tok, "+/=") || seen[tok] {
			t.Fatalf("token %q: want 43 unique base64url characters", tok)
		}
		seen[tok] = true
	}
}
