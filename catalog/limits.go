package catalog

import (
	"strings"

	"github.com/mtlsrelay/mtlsrelay/jobs"
)

// CheckCall refuses a call that asks for more than its connection allows:
// a timeout_ms above the connection's timeout, or a max_attempts above
// its max_attempts. A flow may ask for less, never more: the limits are
// the connection owner's, set for the partner's sake. Nor may a call send
// its own credentials (Authorization, or the header of an auth of type
// header) to a connection that has auth: the connection's are the ones
// the partner gave, and a call's would replace them.
func (c *Connection) CheckCall(call *jobs.Call, name string) error {
	if c.Auth != nil {
		for k := range call.Headers {
			for _, h := range c.Auth.HeaderNames() {
				if strings.EqualFold(k, h) {
					return jobs.Errorf(jobs.CodeInvalidCall,
						"connection %s sends its own credentials (auth type %s), so a call may not set the header %s; remove it from the call",
						name, c.Auth.Type, h)
				}
			}
		}
	}
	if call.TimeoutMS > 0 {
		limit := DefaultTimeout
		if c.Timeout > 0 {
			limit = c.Timeout.D()
		}
		// Compared in milliseconds: a huge timeout_ms would overflow a
		// Duration and pass as negative.
		if int64(call.TimeoutMS) > limit.Milliseconds() {
			return jobs.Errorf(jobs.CodeInvalidCall,
				"timeout_ms %d is above connection %s's timeout of %s; ask for %d or less, or have the connection's timeout raised",
				call.TimeoutMS, name, limit, limit.Milliseconds())
		}
	}
	if call.MaxAttempts > 0 {
		limit := c.MaxAttempts
		if limit <= 0 {
			limit = DefaultMaxAttempts
		}
		if call.MaxAttempts > limit {
			return jobs.Errorf(jobs.CodeInvalidCall,
				"max_attempts %d is above connection %s's max_attempts of %d; ask for %d or less, or have the connection's max_attempts raised",
				call.MaxAttempts, name, limit, limit)
		}
	}
	return nil
}
