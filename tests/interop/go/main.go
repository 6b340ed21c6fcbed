// A Go service joining Switchyard, with nothing but the documented contract: nats.go's micro and
// jetstream packages, the JSON Schemas in shared/contracts/schemas, and its own NATS user (`partner` in
// nats.conf).
//
// It discovers the micro services ($SRV.PING / $SRV.INFO), calls inventory.check with a good and a
// bad payload (a micro error: Nats-Service-Error-Code 400 and a JSON body), then creates its own
// durable consumer `partner` on ORDERS filtered to one order and reads that order's lifecycle
// events, decoding each into Go types and validating it against its JSON Schema. It is a test the
// suite runs (see tests/e2e/tests/e2e/polyglot.rs), not a tool:
//
//	switchyard-go-interop --url nats://127.0.0.1:4222 --user partner --password dev-partner \
//	    --schemas shared/contracts/schemas --order <uuid> --sku A-1 --kinds created,stock_committed,confirmation_sent
//
// Exits 0 when every check passes; prints one line per check either way.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

// Item is one order line.
type Item struct {
	SKU      string `json:"sku"`
	Quantity uint32 `json:"quantity"`
}

// CheckRequest is inventory.check's request.
type CheckRequest struct {
	Items []Item `json:"items"`
}

// CheckReply is inventory.check's reply.
type CheckReply struct {
	AllAvailable   bool     `json:"all_available"`
	UnavailableIDs []string `json:"unavailable_ids"`
	UnknownIDs     []string `json:"unknown_ids,omitempty"`
}

// ErrorReply is the body of every micro error.
type ErrorReply struct {
	Error string `json:"error"`
	Code  int    `json:"code"`
}

// OrderCreated is events.orders.created.<order_id>.
type OrderCreated struct {
	EventID   string `json:"event_id"`
	OrderID   string `json:"order_id"`
	UserID    string `json:"user_id"`
	Email     string `json:"email,omitempty"`
	Items     []Item `json:"items"`
	CreatedAt string `json:"created_at"`
}

// OrderLifecycle is events.orders.{stock_committed,stock_released,confirmation_sent}.<order_id>.
type OrderLifecycle struct {
	EventID string `json:"event_id"`
	OrderID string `json:"order_id"`
	Detail  string `json:"detail"`
	At      string `json:"at"`
}

var failed bool

func check(ok bool, format string, args ...any) {
	message := fmt.Sprintf(format, args...)
	if ok {
		fmt.Println("ok:", message)
		return
	}
	fmt.Println("FAIL:", message)
	failed = true
}

func fatal(format string, args ...any) {
	fmt.Printf("FAIL: "+format+"\n", args...)
	os.Exit(1)
}

// schemas compiles the JSON Schemas of shared/contracts/schemas on demand.
type schemas struct {
	dir      string
	compiler *jsonschema.Compiler
}

func (s *schemas) validate(file string, payload []byte) error {
	schema, err := s.compiler.Compile(filepath.Join(s.dir, file))
	if err != nil {
		return fmt.Errorf("compile %s: %w", file, err)
	}
	instance, err := jsonschema.UnmarshalJSON(bytes.NewReader(payload))
	if err != nil {
		return fmt.Errorf("not JSON: %w", err)
	}
	return schema.Validate(instance)
}

// discover sends a micro discovery request and collects every reply for `wait`.
func discover(nc *nats.Conn, subject string, wait time.Duration) [][]byte {
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		fatal("subscribe for discovery replies: %v", err)
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest(subject, inbox, nil); err != nil {
		fatal("publish %s: %v", subject, err)
	}
	var replies [][]byte
	deadline := time.Now().Add(wait)
	for {
		msg, err := sub.NextMsg(time.Until(deadline))
		if err != nil {
			return replies
		}
		replies = append(replies, msg.Data)
	}
}

func main() {
	url := flag.String("url", "nats://127.0.0.1:4222", "NATS URL")
	user := flag.String("user", "partner", "NATS user")
	password := flag.String("password", "", "NATS password")
	schemaDir := flag.String("schemas", "shared/contracts/schemas", "the JSON Schemas")
	order := flag.String("order", "", "the order whose events to read")
	sku := flag.String("sku", "A-1", "a SKU in stock")
	kinds := flag.String("kinds", "created,stock_committed,confirmation_sent", "the event kinds to expect for the order")
	httpURL := flag.String("http-url", "", "order-service's HTTP API: check its error answers against http.error.json")
	flag.Parse()
	if *order == "" {
		fatal("--order is required")
	}
	s := &schemas{dir: *schemaDir, compiler: jsonschema.NewCompiler()}

	// Its own reply prefix: nats.conf lets each user subscribe to `_INBOX_<user>.>` only.
	nc, err := nats.Connect(*url, nats.UserInfo(*user, *password), nats.Name("go-interop"), nats.CustomInboxPrefix("_INBOX_"+*user))
	if err != nil {
		fatal("connect as %s: %v", *user, err)
	}
	defer nc.Drain()

	// Discovery: every Switchyard service answers $SRV.PING and $SRV.INFO.
	var names []string
	for _, reply := range discover(nc, "$SRV.PING", 500*time.Millisecond) {
		var ping micro.Ping
		if err := json.Unmarshal(reply, &ping); err != nil {
			fatal("undecodable ping reply %s: %v", reply, err)
		}
		names = append(names, ping.Name)
	}
	sort.Strings(names)
	fmt.Println("micro services:", strings.Join(names, " "))
	for _, want := range []string{"audit", "email", "inventory", "orders"} {
		check(contains(names, want), "%s answers $SRV.PING", want)
	}
	infos := discover(nc, "$SRV.INFO.inventory", 500*time.Millisecond)
	check(len(infos) >= 1, "inventory answers $SRV.INFO.inventory")
	for _, reply := range infos {
		var info micro.Info
		if err := json.Unmarshal(reply, &info); err != nil {
			fatal("undecodable info reply: %v", err)
		}
		var subjects []string
		for _, endpoint := range info.Endpoints {
			subjects = append(subjects, endpoint.Subject)
			check(endpoint.QueueGroup == "q", "endpoint %s is in queue group q", endpoint.Subject)
		}
		check(contains(subjects, "inventory.check"), "inventory lists inventory.check: %v", subjects)
		check(info.Type == micro.InfoResponseType, "info type is %s", micro.InfoResponseType)
	}

	// A good request: decoded into Go types and valid against its schema.
	request, _ := json.Marshal(CheckRequest{Items: []Item{{SKU: *sku, Quantity: 1}}})
	check(s.validate("inventory.check.request.json", request) == nil, "the request is valid against inventory.check.request.json")
	msg, err := nc.Request("inventory.check", request, 5*time.Second)
	if err != nil {
		fatal("inventory.check: %v", err)
	}
	check(msg.Header.Get(micro.ErrorCodeHeader) == "", "a good check has no error header")
	var reply CheckReply
	check(json.Unmarshal(msg.Data, &reply) == nil && reply.AllAvailable, "inventory.check answers all_available for %s: %s", *sku, msg.Data)
	err = s.validate("inventory.check.reply.json", msg.Data)
	check(err == nil, "the reply is valid against inventory.check.reply.json (%v)", err)

	// A bad request: a micro error, with the headers and a JSON body.
	msg, err = nc.Request("inventory.check", []byte(`{"items":[]}`), 5*time.Second)
	if err != nil {
		fatal("inventory.check (bad): %v", err)
	}
	check(msg.Header.Get(micro.ErrorCodeHeader) == "400", "a bad check gets %s 400 (got %q)", micro.ErrorCodeHeader, msg.Header.Get(micro.ErrorCodeHeader))
	check(msg.Header.Get(micro.ErrorHeader) != "", "and %s: %q", micro.ErrorHeader, msg.Header.Get(micro.ErrorHeader))
	var problem ErrorReply
	check(json.Unmarshal(msg.Data, &problem) == nil && problem.Code == 400 && problem.Error != "", "and a JSON error body: %s", msg.Data)
	err = s.validate("error.json", msg.Data)
	check(err == nil, "the error body is valid against error.json (%v)", err)

	// Its own durable consumer on ORDERS, filtered to one order: the order's lifecycle.
	js, err := jetstream.New(nc)
	if err != nil {
		fatal("jetstream: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	consumer, err := js.CreateOrUpdateConsumer(ctx, "ORDERS", jetstream.ConsumerConfig{
		Durable:       "partner",
		FilterSubject: "events.orders.*." + *order,
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		MaxDeliver:    5,
	})
	if err != nil {
		fatal("create the durable consumer partner: %v", err)
	}
	want := strings.Split(*kinds, ",")
	var seen []string
	for len(seen) < len(want) {
		batch, err := consumer.Fetch(len(want)-len(seen), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			fatal("fetch: %v", err)
		}
		got := 0
		for msg := range batch.Messages() {
			got++
			tokens := strings.Split(msg.Subject(), ".")
			kind, orderID := tokens[2], tokens[3]
			check(orderID == *order, "%s ends with the order id", msg.Subject())
			check(msg.Headers().Get("traceparent") != "", "%s carries a traceparent", msg.Subject())
			var eventID string
			switch kind {
			case "created":
				var event OrderCreated
				check(json.Unmarshal(msg.Data(), &event) == nil && event.OrderID == *order && len(event.Items) > 0, "created decodes: %s", msg.Data())
				err := s.validate("events.orders.created.json", msg.Data())
				check(err == nil, "created is valid against events.orders.created.json (%v)", err)
				eventID = event.EventID
			default:
				var event OrderLifecycle
				check(json.Unmarshal(msg.Data(), &event) == nil && event.OrderID == *order && event.At != "", "%s decodes: %s", kind, msg.Data())
				err := s.validate("events.orders.lifecycle.json", msg.Data())
				check(err == nil, "%s is valid against events.orders.lifecycle.json (%v)", kind, err)
				eventID = event.EventID
			}
			check(msg.Headers().Get("Nats-Msg-Id") == eventID, "%s: Nats-Msg-Id is the event id", kind)
			// Acked and confirmed by the server before the next one (and before exiting).
			if err := msg.DoubleAck(ctx); err != nil {
				fatal("ack: %v", err)
			}
			seen = append(seen, kind)
			fmt.Println("event", kind, orderID)
		}
		if err := batch.Error(); err != nil {
			fatal("fetch: %v", err)
		}
		if got == 0 {
			fatal("no more events for order %s; saw %v, want %v", *order, seen, want)
		}
	}
	if *httpURL != "" {
		checkHTTPErrors(s, *httpURL, *sku)
	}
	sort.Strings(seen)
	sort.Strings(want)
	check(strings.Join(seen, ",") == strings.Join(want, ","), "the order's events: %v", seen)
	if failed {
		os.Exit(1)
	}
	fmt.Println("go client: all checks passed")
}

func contains(list []string, value string) bool {
	for _, item := range list {
		if item == value {
			return true
		}
	}
	return false
}

// checkHTTPErrors provokes each kind of HTTP error answer and validates the body against
// http.error.json (and not against the micro error's schema, error.json).
func checkHTTPErrors(s *schemas, base string, sku string) {
	client := &http.Client{Timeout: 30 * time.Second}
	cases := []struct {
		name, method, path, contentType, body string
		status                                int
		code                                  string
	}{
		{"malformed JSON", "POST", "/orders", "application/json", `{"user_id":`, 400, "bad_request"},
		{"an array for an order", "POST", "/orders", "application/json", `["u1", null, []]`, 422, "validation_failed"},
		{"a rule broken", "POST", "/orders", "application/json", `{"user_id":"u1","items":[]}`, 422, "validation_failed"},
		{"not JSON", "POST", "/orders", "text/plain", `{}`, 415, "unsupported_media_type"},
		{"an unknown SKU", "POST", "/orders", "application/json", `{"user_id":"u1","items":[{"sku":"NO-SUCH-SKU","quantity":1}]}`, 422, "unknown_sku"},
		{"out of stock", "POST", "/orders", "application/json", `{"user_id":"u1","items":[{"sku":"` + sku + `","quantity":1000000}]}`, 409, "out_of_stock"},
		{"an unknown order", "GET", "/orders/00000000-0000-0000-0000-000000000000", "", "", 404, "not_found"},
		{"a malformed id", "GET", "/orders/nope", "", "", 400, "bad_request"},
		{"an unknown route", "GET", "/no/such/route", "", "", 404, "not_found"},
		{"a wrong method", "DELETE", "/orders", "", "", 405, "method_not_allowed"},
	}
	for _, c := range cases {
		request, err := http.NewRequest(c.method, base+c.path, strings.NewReader(c.body))
		if err != nil {
			fatal("request: %v", err)
		}
		if c.contentType != "" {
			request.Header.Set("Content-Type", c.contentType)
		}
		response, err := client.Do(request)
		if err != nil {
			fatal("%s: %v", c.name, err)
		}
		body, _ := io.ReadAll(response.Body)
		response.Body.Close()
		checkHTTPError(s, c.name, response.StatusCode, response.Header.Get("Content-Type"), body, c.status, c.code)
	}
	// Raw requests Go's client will not send: a path that is not UTF-8, a declared length over
	// the limit with no body.
	address := strings.TrimPrefix(base, "http://")
	for _, raw := range []struct {
		name, request string
		status        int
		code          string
	}{
		{"a path that is not UTF-8", "GET /orders/%FF%FE HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 400, "bad_request"},
		{"a declared body over the limit", "POST /orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10000000000\r\nConnection: close\r\n\r\n", 413, "payload_too_large"},
	} {
		conn, err := net.DialTimeout("tcp", address, 5*time.Second)
		if err != nil {
			fatal("dial: %v", err)
		}
		conn.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := conn.Write([]byte(raw.request)); err != nil {
			fatal("write: %v", err)
		}
		response, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			fatal("%s: %v", raw.name, err)
		}
		body, _ := io.ReadAll(response.Body)
		conn.Close()
		checkHTTPError(s, raw.name, response.StatusCode, response.Header.Get("Content-Type"), body, raw.status, raw.code)
	}
}

func checkHTTPError(s *schemas, name string, status int, contentType string, body []byte, wantStatus int, wantCode string) {
	check(status == wantStatus, "HTTP %s: status %d (want %d): %s", name, status, wantStatus, body)
	check(strings.HasPrefix(contentType, "application/json"), "HTTP %s: JSON (%s)", name, contentType)
	var problem struct {
		Error   string `json:"error"`
		Message string `json:"message"`
	}
	check(json.Unmarshal(body, &problem) == nil && problem.Error == wantCode && problem.Message != "", "HTTP %s: error %q (want %q)", name, problem.Error, wantCode)
	err := s.validate("http.error.json", body)
	check(err == nil, "HTTP %s: valid against http.error.json (%v)", name, err)
	check(s.validate("error.json", body) != nil, "HTTP %s: not a micro error body (error.json)", name)
}
