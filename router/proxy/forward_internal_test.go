package proxy

import (
	"strings"
	"testing"
)

// TestCleanQuery: the query url.ParseQuery would reject loses what it
// rejects, as with httputil.ReverseProxy; a valid one is kept as is.
func TestCleanQuery(t *testing.T) {
	many := strings.Repeat("a=1&", maxQueryParams) + "b=2" // one over the limit
	for _, tt := range []struct{ name, in, want string }{
		{"Empty", "", ""},
		{"Valid", "a=1&b=%20&c", "a=1&b=%20&c"},
		{"Semicolon", "a=1;b=2&c=3", "c=3"},
		{"BadEscape", "a=%zz&c=3", "c=3"},
		{"TruncatedEscape", "c=3&a=%2", "c=3"},
		{"AtTheLimit", strings.Repeat("a=1&", maxQueryParams-1) + "b=2", strings.Repeat("a=1&", maxQueryParams-1) + "b=2"},
		{"OverTheLimit", many, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := cleanQuery(tt.in); got != tt.want {
				t.Errorf("got %.60q want %.60q", got, tt.want)
			}
		})
	}
}
