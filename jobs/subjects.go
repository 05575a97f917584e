package jobs

import (
	"fmt"
	"slices"
	"strconv"
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

	// StreamZones holds durable calls a worker forwarded to the zone of
	// their connection, on <prefix>.zone.<zone>.calls.… (work-queue
	// retention); workers of a zone take them with consumer ZoneConsumer.
	StreamZones = "MTLSRELAY_ZONES"
	// DefaultZone is the zone of a connection that names none, and of a
	// worker that lists none.
	DefaultZone = "default"
	// HeaderForwarded counts how many times workers forwarded a call to
	// its connection's zone.
	HeaderForwarded = "Mtlsrelay-Forwarded"
	// HeaderEnqueued is when a forwarded call was first stored
	// (RFC 3339), so its queueing time counts from there.
	HeaderEnqueued = "Mtlsrelay-Enqueued"
	// HeaderOrigin names the message a forwarded call was first taken
	// from: <stream>.<sequence>.<stored unix nanoseconds>. Workers read
	// these three headers only on messages of MTLSRELAY_ZONES and on
	// forwarded direct calls.
	HeaderOrigin = "Mtlsrelay-Origin"
	// HeaderHandoff carries the nonce of the hand-off that made a
	// forwarded copy: the copy takes the call over with it.
	HeaderHandoff = "Mtlsrelay-Handoff"
)

// ZoneConsumer is the durable pull consumer of zone's workers on
// StreamZones for the calls forwarded there of tenant ("" for v1 calls):
// workers-<zone> or workers-<zone>_<tenant>. Zone names have no '_', so
// the name splits back one way.
func ZoneConsumer(zone, tenant string) string {
	if tenant == "" {
		return ConsumerWorkers + "-" + zone
	}
	return ConsumerWorkers + "-" + zone + "_" + tenant
}

// ParseZoneConsumer returns the zone and tenant of a ZoneConsumer name.
func ParseZoneConsumer(name string) (zone, tenant string, ok bool) {
	rest, ok := strings.CutPrefix(name, ConsumerWorkers+"-")
	if !ok {
		return "", "", false
	}
	zone, tenant, _ = strings.Cut(rest, "_")
	return zone, tenant, ValidZone(zone) && (tenant == "" || ValidName(tenant))
}

// ValidZone reports whether zone can name a zone: 1-64 chars of
// [A-Za-z0-9-] (no '_': it separates zone and tenant in consumer names).
func ValidZone(zone string) bool {
	return zoneChars.matches(zone, 64)
}

// ReplayHeaders are the headers of a stored message a JetStream server
// sends back (a direct get's answer), never on what a flow or a worker
// publishes: a message carrying one on a calls or results subject was
// replayed there by someone's request naming it as reply subject.
var ReplayHeaders = []string{"Nats-Stream", "Nats-Sequence", "Nats-Subject", "Nats-Time-Stamp", "Nats-Last-Sequence"}

// Replayed returns the first of ReplayHeaders that h has, or "".
func Replayed(h map[string][]string) string {
	for _, k := range ReplayHeaders {
		if _, ok := h[k]; ok {
			return k
		}
	}
	return ""
}

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

// ConnectionOf returns the connection a calls or rpc subject names, or ""
// when it names none.
func (s Subjects) ConnectionOf(subject string) string {
	_, conn := s.Route(subject)
	return conn
}

// Route returns the tenant and the connection a calls or rpc subject
// names: <prefix>.calls.<connection> (tenant "", the v1 form) or
// <prefix>.calls.<tenant>.<connection>, also forwarded to a zone
// (<prefix>.zone.<zone>.calls.…). Both are "" when subject is no
// calls or rpc subject; a deeper one returns its whole rest as the
// connection, which is no valid name. The tenant is the subject token the NATS server let the
// flow publish on, never anything inside the call.
func (s Subjects) Route(subject string) (tenant, connection string) {
	_, subject = s.Unzone(subject)
	for _, kind := range []string{".calls.", ".rpc."} {
		rest, ok := strings.CutPrefix(subject, s.p()+kind)
		if !ok {
			continue
		}
		t, c, two := strings.Cut(rest, ".")
		switch {
		case !two:
			return "", rest
		case strings.Contains(c, "."):
			// Neither form: the whole rest, which no connection is named,
			// so the call is refused rather than run on its JSON's.
			return "", rest
		}
		return t, c
	}
	return "", ""
}

// PartitionStream is the stream of partition i of the durable calls
// (nats.partitions): MTLSRELAY_CALLS_PART<i>.
func PartitionStream(i int) string { return StreamCalls + "_PART" + strconv.Itoa(i) }

// PartitionCallsAll matches the calls of partition i: the NATS server's
// subject mapping (PartitionMapping) moves <prefix>.calls.<connection> to
// <prefix>.part.<i>.calls.<connection>.
func (s Subjects) PartitionCallsAll(i int) string {
	return s.p() + ".part." + strconv.Itoa(i) + ".calls.*"
}

// PartitionMapping is the NATS server subject mapping that spreads v1
// durable calls over n partitions by their connection, deterministically:
// every call of a connection, and every publish of one call, reaches the
// same stream, whose duplicate window so keeps deduplicating it.
func (s Subjects) PartitionMapping(n int) (source, destination string) {
	return s.p() + ".calls.*", s.p() + ".part.{{partition(" + strconv.Itoa(n) + ",1)}}.calls.{{wildcard(1)}}"
}

// Zoned is subject (a calls or rpc subject a flow published on) forwarded
// to zone: <prefix>.zone.<zone>.calls.… or <prefix>.zone.<zone>.rpc.….
// A subject forwarded already is forwarded from its original.
func (s Subjects) Zoned(zone, subject string) string {
	_, subject = s.Unzone(subject)
	return s.p() + ".zone." + zone + "." + strings.TrimPrefix(subject, s.p()+".")
}

// Unzone returns the zone a forwarded subject names and the subject the
// flow published on; a subject not forwarded comes back as it is, with
// zone "".
// A partitioned call's subject (<prefix>.part.<i>.calls.…) comes back as
// the one the flow published on, too.
func (s Subjects) Unzone(subject string) (zone, original string) {
	for _, kind := range []string{".zone.", ".part."} {
		rest, ok := strings.CutPrefix(subject, s.p()+kind)
		if !ok {
			continue
		}
		tok, rest, ok := strings.Cut(rest, ".")
		if !ok {
			return "", subject
		}
		if kind == ".part." {
			return "", s.p() + "." + rest
		}
		return tok, s.p() + "." + rest
	}
	return "", subject
}

// ZoneCalls matches the durable calls of tenant ("" for v1 calls)
// forwarded to zone.
func (s Subjects) ZoneCalls(zone, tenant string) string {
	if tenant == "" {
		return s.p() + ".zone." + zone + ".calls.*"
	}
	return s.p() + ".zone." + zone + ".calls." + tenant + ".*"
}

// ZoneRPCAll matches the direct calls forwarded to zone.
func (s Subjects) ZoneRPCAll(zone string) string { return s.p() + ".zone." + zone + ".rpc.>" }

// ZonesCallsAll matches the durable calls forwarded to any zone: the
// subjects of StreamZones.
func (s Subjects) ZonesCallsAll() string { return s.p() + ".zone.*.calls.>" }

// TenantCalls is the durable call subject of connection for tenant.
func (s Subjects) TenantCalls(tenant, connection string) string {
	return s.p() + ".calls." + tenant + "." + connection
}

// TenantCallsAll matches every durable call subject of tenant.
func (s Subjects) TenantCallsAll(tenant string) string { return s.p() + ".calls." + tenant + ".*" }

// UntenantedCalls matches the v1 call subjects, <prefix>.calls.<connection>.
func (s Subjects) UntenantedCalls() string { return s.p() + ".calls.*" }

// TenantRPC is the direct call subject of connection for tenant.
func (s Subjects) TenantRPC(tenant, connection string) string {
	return s.p() + ".rpc." + tenant + "." + connection
}

// TenantResult is the conventional reply subject of tenant's call id.
func (s Subjects) TenantResult(tenant, id string) string {
	return s.p() + ".results." + tenant + "." + id
}

// TenantResultsAll matches every results subject of tenant.
func (s Subjects) TenantResultsAll(tenant string) string { return s.p() + ".results." + tenant + ".>" }

// TenantInbox is the inbox prefix of tenant's flows (nats.go's
// CustomInboxPrefix), under which its direct replies may go.
func TenantInbox(tenant string) string { return DefaultReplyPrefix + "_" + tenant }

// TenantStream is the stream of tenant's durable calls: each tenant has its
// own, so duplicate windows (Nats-Msg-Id) are the tenant's alone.
func TenantStream(tenant string) string { return StreamCalls + "_" + tenant }

// ResultMsgID is the Nats-Msg-Id of the result of tenant's call id: the id
// for a v1 call, <tenant>.<id> otherwise, so no tenant's id can shadow
// another's in the results stream's duplicate window.
func ResultMsgID(tenant, id string) string {
	if tenant == "" {
		return id
	}
	return tenant + "." + id
}

// ValidSubject reports whether subj is a concrete NATS subject a result can be
// published to: non-empty tokens, no wildcards, no white space.
func ValidSubject(subj string) bool {
	if subj == "" || len(subj) > 512 {
		return false
	}
	for tok := range strings.SplitSeq(subj, ".") {
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
	for _, kind := range []string{".calls.", ".rpc.", ".dead.", ".zone.", ".part."} {
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

// CheckReply says whether subject may receive the result of a call of
// tenant ("" for a v1 call): a concrete subject under <prefix>.results.
// (with a tenant: <prefix>.results.<tenant>.) or under one of prefixes
// (inbox prefixes such as "_INBOX"; with a tenant, also TenantInbox).
// tenants are every tenant configured: a v1 call's result may not go under
// theirs. Anything else ($KV.*, $JS.*, the relay's own calls, rpc and
// dead-letter subjects, another tenant's or application's subjects) is
// refused with CodeInvalidCall: the relay publishes results with its own
// permissions, so a reply subject is where a flow could make it write.
func (s Subjects) CheckReply(subject, tenant string, prefixes, tenants []string) *Error {
	if !ValidSubject(subject) {
		return Errorf(CodeInvalidCall, "reply_to %q is not a concrete NATS subject (no wildcards, no empty tokens, no spaces)", subject)
	}
	results := s.p() + ".results."
	allowed := slices.Clone(prefixes)
	if tenant != "" {
		results += tenant + "."
		allowed = append(allowed, TenantInbox(tenant))
	}
	ok := strings.HasPrefix(subject, results)
	for _, p := range allowed {
		ok = ok || strings.HasPrefix(subject, p+".")
	}
	if ok && tenant == "" {
		// A v1 call never writes where a tenant's results go.
		for _, t := range tenants {
			if strings.HasPrefix(subject, results+t+".") || strings.HasPrefix(subject, TenantInbox(t)+".") {
				ok = false
			}
		}
	}
	if ok {
		return nil
	}
	return Errorf(CodeInvalidCall, "reply_to %q is not a subject results of this call may go to; use one under %s> or under an inbox prefix (%s.>)",
		subject, results, strings.Join(allowed, ".>, "))
}

// CheckReplyPrefix checks an inbox prefix a relay's config allows reply
// subjects under: a concrete subject outside the system's $ subjects.
func CheckReplyPrefix(prefix string) error {
	if !ValidSubject(prefix) || strings.HasPrefix(prefix, "$") {
		return fmt.Errorf("%q is not an inbox prefix; use a concrete subject outside $..., such as _INBOX or _INBOX_billing", prefix)
	}
	return nil
}
