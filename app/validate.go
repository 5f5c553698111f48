package app

import (
	"fmt"
	"net/mail"
	"strings"
	"unicode/utf8"
)

// Validator collects messages per field. The zero value is not usable; call
// NewValidator.
type Validator struct {
	fields map[string]string
}

// NewValidator returns an empty Validator.
func NewValidator() *Validator { return &Validator{fields: map[string]string{}} }

// Set records msg for field unless the field already has a message.
func (v *Validator) Set(field, msg string) {
	if _, ok := v.fields[field]; !ok && msg != "" {
		v.fields[field] = msg
	}
}

// Check records msg for field when msg is not empty.
func (v *Validator) Check(field, msg string) { v.Set(field, msg) }

// Length checks that s has min..max characters and is valid UTF-8 without
// control characters other than newlines and tabs.
func (v *Validator) Length(field, s string, min, max int) {
	v.Set(field, CheckText(s, min, max))
}

// Err returns an EINVALID *Error listing the fields, or nil when none.
func (v *Validator) Err() error {
	if len(v.fields) == 0 {
		return nil
	}
	return &Error{Code: EINVALID, Message: "Please correct the highlighted fields.", Fields: v.fields}
}

// CheckText returns "" when s is valid UTF-8 of min..max characters with no
// control characters but newline and tab, else a message.
func CheckText(s string, min, max int) string {
	if !utf8.ValidString(s) {
		return "must be valid UTF-8 text"
	}
	n := utf8.RuneCountInString(s)
	switch {
	case n < min && min == 1:
		return "is required"
	case n < min:
		return fmt.Sprintf("must be at least %d characters", min)
	case n > max:
		return fmt.Sprintf("must be at most %d characters", max)
	}
	for _, r := range s {
		if r < 0x20 && r != '\n' && r != '\t' && r != '\r' || r == 0x7f {
			return "must not contain control characters"
		}
	}
	return ""
}

// ValidateEmail returns "" when s is a plain address like name@example.org
// (or empty and not required), else a message.
func ValidateEmail(s string, required bool) string {
	if s == "" {
		if required {
			return "is required"
		}
		return ""
	}
	if len(s) > 254 {
		return "must be at most 254 characters"
	}
	a, err := mail.ParseAddress(s)
	if err != nil || a.Address != s || a.Name != "" {
		return "must be an email address like name@example.org"
	}
	at := strings.LastIndexByte(s, '@')
	if at < 1 || !strings.Contains(s[at+1:], ".") || strings.HasSuffix(s, ".") {
		return "must be an email address like name@example.org"
	}
	return ""
}

// ValidatePhone returns "" when s is empty or a phone number of 5 to 30
// characters made of digits, spaces and + - ( ), else a message.
func ValidatePhone(s string) string {
	if s == "" {
		return ""
	}
	if len(s) < 5 || len(s) > 30 {
		return "must be 5 to 30 characters"
	}
	digits := 0
	for _, r := range s {
		switch {
		case r >= '0' && r <= '9':
			digits++
		case r == ' ' || r == '+' || r == '-' || r == '(' || r == ')':
		default:
			return "may only contain digits, spaces and + - ( )"
		}
	}
	if digits < 5 {
		return "must contain at least 5 digits"
	}
	return ""
}
