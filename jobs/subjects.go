package jobs

import (
	"fmt"
	"strings"
)

// Names fixed by the wire contract.
const (
	// DefaultPrefix is the subject prefix unless configured otherwise.
	DefaultPrefix = "mtlsrelay"
	// StreamCalls holds durable calls (work-queue retention).
	StreamCalls = "MTLSRELAY_CALLS"
	// StreamResults holds results published under <prefix>.results.>.
	StreamResults = "MTLSRELAY_RESULTS"
	// StreamDead holds dead letters, <prefix>.dead.<connection>.
	StreamDead = "MTLSRELAY_DEAD"
	// ConsumerWorkers is the durable pull consumer every worker shares.
	ConsumerWorkers = "workers"
	// QueueGroup is the queue group of direct (rpc) calls.
	QueueGroup = "workers"
	// RegistryBucket is the KV bucket of the shared registry.
	RegistryBucket = "mtlsrelay_registry"

	// HeaderMsgID is JetStream's de-duplication header; it carries the call id.
	HeaderMsgID = "Nats-Msg-Id"
	// HeaderCallID carries the call id on results and dead letters.
	HeaderCallID = "Mtlsrelay-Call-Id"
	// HeaderTraceparent carries W3C trace context from call to result.
	HeaderTraceparent = "traceparent"
	// HeaderProgress is set on progress messages, to the attempt that
	// failed, so a flow can tell them from the final result without
	// decoding. Their Nats-Msg-Id is ProgressMsgID, not the call id.
	HeaderProgress = "Mtlsrelay-Progress"
	// HeaderDeadReason carries the reason a dead letter was written.
	HeaderDeadReason = "Mtlsrelay-Dead-Reason"
)

// Subjects builds the subjects of the wire contract under one prefix. The
// zero value uses DefaultPrefix.
type Subjects struct {
	// Prefix replaces "mtlsrelay" as a whole; empty means DefaultPrefix.
	Prefix string
}

func (s Subjects) p() string {
	if s.Prefix == "" {
		return DefaultPrefix
	}
	return s.Prefix
}

// Calls is the durable call subject of a connection.
func (s Subjects) Calls(connection string) string { return s.p() + ".calls." + connection }

// CallsAll matches every durable call subject.
func (s Subjects) CallsAll() string { return s.p() + ".calls.>" }

// RPC is the direct (core request) subject of a connection.
func (s Subjects) RPC(connection string) string { return s.p() + ".rpc." + connection }

// RPCAll matches every direct call subject.
func (s Subjects) RPCAll() string { return s.p() + ".rpc.>" }

// Result is the conventional reply subject for a call id, kept in StreamResults.
func (s Subjects) Result(id string) string { return s.p() + ".results." + id }

// ResultsAll matches every subject kept in StreamResults.
func (s Subjects) ResultsAll() string { return s.p() + ".results.>" }

// IsResult reports whether subject is kept in StreamResults.
func (s Subjects) IsResult(subject string) bool {
	return strings.HasPrefix(subject, s.p()+".results.")
}

// Dead is the dead-letter subject of a connection.
func (s Subjects) Dead(connection string) string { return s.p() + ".dead." + connection }

// DeadAll matches every dead-letter subject.
func (s Subjects) DeadAll() string { return s.p() + ".dead.>" }

// ConnectionOf returns the last token of a calls or rpc subject, the
// connection name the subject names, or "" when it names none.
func (s Subjects) ConnectionOf(subject string) string {
	for _, kind := range []string{".calls.", ".rpc."} {
		if rest, ok := strings.CutPrefix(subject, s.p()+kind); ok {
			return rest
		}
	}
	return ""
}

// ValidSubject reports whether subj is a concrete NATS subject a result can be
// published to: non-empty tokens, no wildcards, no white space.
func ValidSubject(subj string) bool {
	if subj == "" || len(subj) > 512 {
		return false
	}
	for _, tok := range strings.Split(subj, ".") {
		if tok == "" || tok == "*" || tok == ">" {
			return false
		}
		if strings.ContainsAny(tok, " \t\r\n*>") {
			return false
		}
	}
	return true
}

// Reserved reports whether subject is one no relay accepts as a reply
// subject whatever its config: the relay's own calls, rpc and dead-letter
// subjects, and the system's $ subjects ($KV, $JS, $O...). A client checks
// it before sending; the relay applies CheckReply.
func (s Subjects) Reserved(subject string) bool {
	if strings.HasPrefix(subject, "$") {
		return true
	}
	for _, kind := range []string{".calls.", ".rpc.", ".dead."} {
		if strings.HasPrefix(subject, s.p()+kind) {
			return true
		}
	}
	return false
}

// DefaultReplyPrefix is the inbox prefix a reply subject may be under
// besides the results subjects: where nats.go's requests and
// jobs.Client's inboxes live.
const DefaultReplyPrefix = "_INBOX"

// CheckReply says whether subject may receive a call's result: a concrete
// subject under <prefix>.results. or under one of prefixes (each an inbox
// prefix such as "_INBOX"). Anything else ($KV.*, $JS.*, the relay's own
// calls, rpc and dead-letter subjects, another application's subjects) is
// refused with CodeInvalidCall: the relay publishes results with its own
// permissions, so a reply subject is where a flow could make it write.
func (s Subjects) CheckReply(subject string, prefixes []string) *Error {
	if !ValidSubject(subject) {
		return Errorf(CodeInvalidCall, "reply_to %q is not a concrete NATS subject (no wildcards, no empty tokens, no spaces)", subject)
	}
	if s.IsResult(subject) {
		return nil
	}
	for _, p := range prefixes {
		if strings.HasPrefix(subject, p+".") {
			return nil
		}
	}
	return Errorf(CodeInvalidCall, "reply_to %q is not a subject results may go to; use one under %s or under an inbox prefix (%s.>)",
		subject, s.ResultsAll(), strings.Join(prefixes, ".>, "))
}

// CheckReplyPrefix checks an inbox prefix a relay's config allows reply
// subjects under: a concrete subject outside the system's $ subjects.
func CheckReplyPrefix(prefix string) error {
	if !ValidSubject(prefix) || strings.HasPrefix(prefix, "$") {
		return fmt.Errorf("%q is not an inbox prefix; use a concrete subject outside $..., such as _INBOX or _INBOX_billing", prefix)
	}
	return nil
}
