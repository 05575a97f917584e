package jobs

import "strings"

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

// Reserved reports whether subject is one mtlsrelay consumes or writes for
// its own purposes (calls, rpc, dead letters): a result published there
// would loop back or pollute them, so it can never be a reply_to.
func (s Subjects) Reserved(subject string) bool {
	for _, kind := range []string{".calls.", ".rpc.", ".dead."} {
		if strings.HasPrefix(subject, s.p()+kind) {
			return true
		}
	}
	return false
}
