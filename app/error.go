package app

import (
	"errors"
	"fmt"
)

// Error codes. Only HTTP handlers and the binary map them to statuses or
// exit codes.
const (
	EINVALID      = "invalid"      // bad input; Fields may say which
	ENOTFOUND     = "not_found"    // no such musician, project, request, ...
	ECONFLICT     = "conflict"     // e.g. duplicate email, a request already answered
	EUNAUTHORIZED = "unauthorized" // not logged in, bad credentials or token
	EFORBIDDEN    = "forbidden"    // logged in but not allowed
	EINTERNAL     = "internal"     // anything else
)

// Error is an application error with a machine-readable Code, a Message fit
// for the user and, for EINVALID, messages per input field.
type Error struct {
	Code    string
	Message string
	Fields  map[string]string // field name → message; nil unless EINVALID
}

func (e *Error) Error() string { return "app: " + e.Message }

// Errorf returns an *Error with code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the first *Error in err's chain, "" for nil
// and EINTERNAL for any other error.
func ErrorCode(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EINTERNAL
}

// ErrorMessage returns the user-facing message of err: the Message of an
// *Error, else "Internal error." (details are logged, never shown).
func ErrorMessage(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "Internal error."
}

// ErrorFields returns the field messages of an EINVALID *Error in err's
// chain, or nil.
func ErrorFields(err error) map[string]string {
	var e *Error
	if errors.As(err, &e) {
		return e.Fields
	}
	return nil
}
