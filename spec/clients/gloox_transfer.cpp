// One XEP-0065 transfer between two gloox clients, through the server's
// SOCKS5 bytestreams proxy, with gloox's own SOCKS5BytestreamManager.
//
// gloox has no proxy discovery of its own (its ft_send example hard-codes
// the streamhost given to addStreamHost), so the
// initiator does what a gloox application has to: disco#items on its
// server, disco#info on each item for a "proxy/bytestreams" identity, and
// the bytestreams query to that proxy for its streamhost, which it hands
// to addStreamHost. It then requests a bytestream to the target's full
// JID; the target accepts and connects. From there on it is gloox's usage,
// as in its ft_send example: the initiator sends while isOpen() (chunks of
// FT_CHUNK bytes), then close()s the stream, a full close(2) of the
// socket; the target reads until the stream closes.
//
// gloox 1.0.24 reports the initiator's stream open as soon as the proxy
// has answered its SOCKS5 CONNECT (SOCKS5Bytestream::handleConnect), in the
// same call that sends the activation request, not when the activation
// result comes: its bytes (and, for 0 bytes, its close) reach the proxy
// before or while it activates. The result then calls open a second time
// (SOCKS5Bytestream::activate), which is how this program knows it came.
//
// Each client runs in its own thread: gloox's sends block, and the
// initiator's would wait for a target nobody reads. It prints
//
//   streamhost JID HOST PORT
//   initiator: sent N bytes, sha256 HEX
//   target: received N bytes, sha256 HEX
//
// and compares nothing: the caller does (spec/gloox_spec.lua). It exits 1
// when the transfer fails or does not end within the timeout (an error
// from gloox, an activation refused, a stream that never opens or closes),
// and 2 on a usage error. It does not speak TLS: the server is on loopback.
//
// Usage: gloox_transfer C2S_PORT INITIATOR_JID PASSWORD TARGET_JID
//        PASSWORD BYTES [SEED [TIMEOUT]]
// The JIDs are bare: the program binds the resources "gloox-initiator"
// and "gloox-target".
// SPDX-License-Identifier: MIT
#include <gloox/bytestream.h>
#include <gloox/bytestreamdatahandler.h>
#include <gloox/bytestreamhandler.h>
#include <gloox/client.h>
#include <gloox/connectionlistener.h>
#include <gloox/disco.h>
#include <gloox/discohandler.h>
#include <gloox/error.h>
#include <gloox/iq.h>
#include <gloox/iqhandler.h>
#include <gloox/socks5bytestream.h>
#include <gloox/socks5bytestreammanager.h>
#include <gloox/stanzaextension.h>
#include <gloox/tag.h>

#include <openssl/evp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>

using namespace gloox;

namespace {

// What the initiator hands to send() at a time: ft_send's read size.
const size_t FT_CHUNK = 200024;
const std::string XMLNS_S5B = "http://jabber.org/protocol/bytestreams";
// How long one recv() may wait for a socket (microseconds).
const int POLL_US = 10000;

typedef std::chrono::steady_clock Clock;

// What both threads read: the deadline, and whether the target is online.
struct Shared {
	Clock::time_point deadline;
	std::atomic<bool> target_online{false};
	std::atomic<bool> target_done{false};
	std::atomic<bool> abort{false};
};

std::string hex(const unsigned char *bytes, unsigned int len)
{
	static const char digits[] = "0123456789abcdef";
	std::string out;
	for (unsigned int i = 0; i < len; i++) {
		out += digits[bytes[i] >> 4];
		out += digits[bytes[i] & 15];
	}
	return out;
}

// SHA-256 fed piecewise, for the target's data as it comes.
class Digest {
public:
	Digest() : ctx(EVP_MD_CTX_new())
	{
		EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
	}
	~Digest()
	{
		EVP_MD_CTX_free(ctx);
	}
	Digest(const Digest &) = delete;
	Digest &operator=(const Digest &) = delete;
	void update(const std::string &data)
	{
		EVP_DigestUpdate(ctx, data.data(), data.size());
	}
	std::string finish()
	{
		unsigned char md[EVP_MAX_MD_SIZE];
		unsigned int len = 0;
		EVP_DigestFinal_ex(ctx, md, &len);
		return hex(md, len);
	}

private:
	EVP_MD_CTX *ctx;
};

// The bytestreams query and its answer, <streamhost/>s: gloox's own
// (SOCKS5BytestreamManager::Query) is private to the manager.
const int ExtStreamhostQuery = ExtUser + 1;

class StreamhostQuery : public StanzaExtension {
public:
	explicit StreamhostQuery(const Tag *tag = nullptr) : StanzaExtension(ExtStreamhostQuery)
	{
		if (!tag) {
			return;
		}
		for (const Tag *child : tag->findChildren("streamhost")) {
			StreamHost host;
			host.jid = JID(child->findAttribute("jid"));
			host.host = child->findAttribute("host");
			host.port = std::atoi(child->findAttribute("port").c_str());
			hosts.push_back(host);
		}
	}
	const std::string &filterString() const override
	{
		static const std::string filter = "/iq/query[@xmlns='" + XMLNS_S5B + "']";
		return filter;
	}
	StanzaExtension *newInstance(const Tag *tag) const override
	{
		return new StreamhostQuery(tag);
	}
	Tag *tag() const override
	{
		Tag *t = new Tag("query");
		t->setXmlns(XMLNS_S5B);
		return t;
	}
	StanzaExtension *clone() const override
	{
		return new StreamhostQuery(*this);
	}

	StreamHostList hosts;
};

// A logged-in client and its bytestream manager; a subclass is one side.
class Side : public ConnectionListener, public BytestreamHandler, public BytestreamDataHandler {
public:
	Side(Shared &state, const std::string &side, const std::string &jid, const std::string &password, int port)
		: shared(state), name(side), client(JID(jid), password)
	{
		client.setServer("127.0.0.1");
		client.setPort(port);
		client.setTls(TLSDisabled);
		client.setCompression(false);
		client.registerConnectionListener(this);
		manager.reset(new SOCKS5BytestreamManager(&client, this));
	}
	virtual ~Side()
	{
		if (stream) {
			manager->dispose(static_cast<SOCKS5Bytestream *>(stream));
		}
	}

	// Runs the client until done() or the deadline, then logs out; the
	// error, if any, is left in `error`.
	void run()
	{
		if (!client.connect(false)) {
			fail("could not connect to the server");
			return;
		}
		while (!done() && error.empty() && !shared.abort && Clock::now() < shared.deadline) {
			// While a stream is up, it is the one to wait on.
			bool streaming = stream && !stream_ended;
			ConnectionError e = client.recv(streaming ? 0 : POLL_US);
			if (e != ConnNoError) {
				fail("the XMPP connection ended (gloox ConnectionError " + std::to_string(e) + ")");
				break;
			}
			step();
			if (stream && !stream_ended) {
				ConnectionError se = stream->recv(stream_wait());
				// A stream that closes after it opened calls
				// handleBytestreamClose first; one that never opened does not.
				if (se != ConnNoError && !stream_ended) {
					fail("the stream's connection ended before it opened (gloox ConnectionError "
						+ std::to_string(se) + ")");
				}
			}
		}
		if (error.empty() && !done()) {
			fail(shared.abort ? "the other side failed" : "timed out");
		}
		client.disconnect();
	}

	std::string error;

protected:
	virtual bool done() = 0;
	// One turn of the loop, after the client's recv().
	virtual void step() {}
	// How long the stream's recv() may wait (microseconds).
	virtual int stream_wait()
	{
		return POLL_US;
	}

	void fail(const std::string &why)
	{
		if (error.empty()) {
			error = name + ": " + why;
		}
	}

	void onConnect() override {}
	void onDisconnect(ConnectionError e) override
	{
		if (!done()) {
			fail(e == ConnAuthenticationFailed ? "authentication failed"
				: "disconnected (gloox ConnectionError " + std::to_string(e) + ")");
		}
	}
	bool onTLSConnect(const CertInfo &) override
	{
		return false;
	}

	// BytestreamHandler
	void handleIncomingBytestreamRequest(const std::string &, const JID &from) override
	{
		fail("unexpected bytestream request from " + from.full());
	}
	void handleIncomingBytestream(Bytestream *) override
	{
		fail("unexpected incoming bytestream");
	}
	void handleOutgoingBytestream(Bytestream *) override
	{
		fail("unexpected outgoing bytestream");
	}
	void handleBytestreamError(const IQ &iq, const std::string &sid) override
	{
		std::unique_ptr<Tag> stanza(iq.tag());
		fail("bytestream " + sid + " refused: " + stanza->xml());
	}

	// BytestreamDataHandler
	void handleBytestreamData(Bytestream *, const std::string &data) override
	{
		fail("unexpected " + std::to_string(data.size()) + " bytes on the stream");
	}
	void handleBytestreamError(Bytestream *, const IQ &iq) override
	{
		std::unique_ptr<Tag> stanza(iq.tag());
		fail("stream error: " + stanza->xml());
	}
	void handleBytestreamOpen(Bytestream *) override
	{
		opens++;
	}
	void handleBytestreamClose(Bytestream *) override
	{
		stream_ended = true;
	}

	Shared &shared;
	std::string name;
	Client client;
	std::unique_ptr<SOCKS5BytestreamManager> manager;
	Bytestream *stream = nullptr;
	int opens = 0;
	bool stream_ended = false;
};

// Accepts any offer, connects to the streamhost and reads to the end.
class Target : public Side {
public:
	using Side::Side;

	size_t received = 0;
	std::string sha256;

protected:
	bool done() override
	{
		return !sha256.empty();
	}
	void step() override
	{
		if (stream_ended && sha256.empty()) {
			if (opens == 0) {
				fail("the stream closed without opening");
				return;
			}
			sha256 = digest.finish();
			shared.target_done = true;
		}
	}
	void onConnect() override
	{
		shared.target_online = true;
	}
	void handleIncomingBytestreamRequest(const std::string &sid, const JID &) override
	{
		manager->acceptSOCKS5Bytestream(sid);
	}
	void handleIncomingBytestream(Bytestream *bs) override
	{
		stream = bs;
		bs->registerBytestreamDataHandler(this);
		if (!bs->connect()) {
			fail("could not connect to any streamhost");
		}
	}
	void handleBytestreamData(Bytestream *, const std::string &data) override
	{
		received += data.size();
		digest.update(data);
	}

private:
	Digest digest;
};

// Finds the proxy, requests a bytestream to the target and sends.
class Initiator : public Side, public DiscoHandler, public IqHandler {
public:
	Initiator(Shared &state, const std::string &jid, const std::string &password, int port,
		const std::string &to, size_t size, unsigned seed)
		: Side(state, "initiator", jid, password, port), target(to), data(size, '\0')
	{
		std::mt19937 random(seed);
		for (char &byte : data) {
			byte = static_cast<char>(random() & 0xff);
		}
		unsigned char md[EVP_MAX_MD_SIZE];
		unsigned int len = 0;
		EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr);
		sha256 = hex(md, len);
		client.registerStanzaExtension(new StreamhostQuery());
	}

	std::string streamhost;
	size_t sent = 0;
	std::string sha256;

protected:
	enum { DISCO_ITEMS, DISCO_INFO, STREAMHOST };

	// Done once closed and the activation result came; after the target,
	// so that a refused activation is seen before the program ends.
	bool done() override
	{
		return closed && opens >= 2 && shared.target_done;
	}
	void step() override
	{
		if (found && !requested && shared.target_online) {
			requested = true;
			if (!manager->requestSOCKS5Bytestream(JID(target), SOCKS5BytestreamManager::S5BTCP)) {
				fail("requestSOCKS5Bytestream refused");
			}
		}
		if (!stream || closed) {
			return;
		}
		// As gloox's ft_send: send while the stream says it is open.
		if (sent < data.size()) {
			if (stream->isOpen()) {
				size_t n = std::min(FT_CHUNK, data.size() - sent);
				if (!stream->send(data.substr(sent, n))) {
					fail("send failed after " + std::to_string(sent) + " bytes");
					return;
				}
				sent += n;
			}
		} else if (opens > 0) {
			stream->close();
			closed = true;
		}
	}
	int stream_wait() override
	{
		// Nothing comes back on it; while sending, sending is the wait.
		return sent < data.size() && stream->isOpen() ? 0 : POLL_US;
	}
	void onConnect() override
	{
		client.disco()->getDiscoItems(JID(client.jid().server()), "", this, DISCO_ITEMS);
	}

	void handleDiscoItems(const JID &from, const Disco::Items &items, int) override
	{
		for (const Disco::Item *item : items.items()) {
			pending++;
			client.disco()->getDiscoInfo(item->jid(), "", this, DISCO_INFO);
		}
		if (pending == 0) {
			fail("no disco#items on " + from.full());
		}
	}
	void handleDiscoInfo(const JID &from, const Disco::Info &info, int) override
	{
		pending--;
		bool proxy = false;
		for (const Disco::Identity *id : info.identities()) {
			proxy = proxy || (id->category() == "proxy" && id->type() == "bytestreams");
		}
		if (proxy && !asked) {
			asked = true;
			IQ iq(IQ::Get, from, client.getID());
			iq.addExtension(new StreamhostQuery());
			client.send(iq, this, STREAMHOST);
		} else if (pending == 0 && !asked) {
			fail("no proxy/bytestreams among the server's disco#items");
		}
	}
	void handleDiscoError(const JID &from, const Error *, int) override
	{
		pending--;
		if (pending == 0 && !asked) {
			fail("disco error from " + from.full() + ", and no proxy found");
		}
	}

	bool handleIq(const IQ &) override
	{
		return false;
	}
	void handleIqID(const IQ &iq, int) override
	{
		const StreamhostQuery *q = iq.findExtension<StreamhostQuery>(ExtStreamhostQuery);
		if (iq.subtype() != IQ::Result || !q || q->hosts.empty()) {
			fail("no streamhost from " + iq.from().full());
			return;
		}
		const StreamHost &host = q->hosts.front();
		streamhost = host.jid.full() + " " + host.host + " " + std::to_string(host.port);
		manager->addStreamHost(host.jid, host.host, host.port);
		found = true;
	}

	void handleOutgoingBytestream(Bytestream *bs) override
	{
		stream = bs;
		bs->registerBytestreamDataHandler(this);
		if (!bs->connect()) {
			fail("could not connect to the streamhost");
		}
	}

private:
	std::string target;
	std::string data;
	int pending = 0;
	bool asked = false;
	bool found = false;
	bool requested = false;
	bool closed = false;
};

void usage()
{
	std::fprintf(stderr, "usage: gloox_transfer C2S_PORT INITIATOR_JID PASSWORD TARGET_JID PASSWORD BYTES [SEED [TIMEOUT]]\n");
	std::exit(2);
}

} // namespace

int main(int argc, char **argv)
{
	if (argc < 7 || argc > 9) {
		usage();
	}
	char *end = nullptr;
	int port = static_cast<int>(std::strtol(argv[1], &end, 10));
	unsigned long long size = std::strtoull(argv[6], nullptr, 10);
	unsigned seed = argc > 7 ? static_cast<unsigned>(std::strtoul(argv[7], nullptr, 10)) : 1;
	double timeout = argc > 8 ? std::atof(argv[8]) : 60;
	if (*end != '\0' || port <= 0 || timeout <= 0) {
		usage();
	}

	Shared shared;
	shared.deadline = Clock::now() + std::chrono::milliseconds(static_cast<long long>(timeout * 1000));
	const std::string target_jid = std::string(argv[4]) + "/gloox-target";
	Target target(shared, "target", target_jid, argv[5], port);
	Initiator initiator(shared, std::string(argv[2]) + "/gloox-initiator", argv[3], port,
		target_jid, static_cast<size_t>(size), seed);

	// Either side's failure ends the other's wait.
	std::thread target_thread([&] {
		target.run();
		if (!target.error.empty()) {
			shared.abort = true;
		}
	});
	initiator.run();
	if (!initiator.error.empty()) {
		shared.abort = true;
	}
	target_thread.join();

	if (!initiator.streamhost.empty()) {
		std::printf("streamhost %s\n", initiator.streamhost.c_str());
	}
	if (initiator.error.empty() || initiator.sent == size) {
		std::printf("initiator: sent %zu bytes, sha256 %s\n", initiator.sent,
			initiator.sent == size ? initiator.sha256.c_str() : "-");
	}
	if (!target.sha256.empty()) {
		std::printf("target: received %zu bytes, sha256 %s\n", target.received, target.sha256.c_str());
	}
	std::fflush(stdout);
	int status = 0;
	for (const std::string &e : { initiator.error, target.error }) {
		if (!e.empty()) {
			std::fprintf(stderr, "gloox_transfer: %s\n", e.c_str());
			status = 1;
		}
	}
	return status;
}
