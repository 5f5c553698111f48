package registry

import (
	"errors"
	"fmt"
)

// Error codes. Only HTTP handlers and CLIs map them to statuses or exit codes.
const (
	ECONFLICT = "conflict"  // e.g. a tenant that already exists, a lost CAS race
	EINVALID  = "invalid"   // bad input: slug, domain, record
	ENOTFOUND = "not_found" // no such tenant
	EINTERNAL = "internal"  // anything else, e.g. Consul unreachable
)

// Error is a registry error with a machine-readable Code and a message fit
// for the user.
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("registry: %s", e.Message) }

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
