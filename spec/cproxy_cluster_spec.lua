-- The front of several proxy65 nodes (cproxy/proxy65/cluster.lua, #31) on
-- its own: which node a requester gets, when a node leaves the list and
-- comes back, and which answer an activation passed to every node gets.
-- The nodes' answers are built here as a node would send them; the whole
-- path through real servers is spec/proxy65_cluster_spec.lua.
package.path = "lua/?.lua;" .. package.path;
require "spec.helpers.core"; -- this checkout's C extension, for the requires below
local cluster = require "cproxy.proxy65.cluster";
local st = require "cproxy.standalone.stanza";

local XMLNS = cluster.xmlns;

-- util.timer's API with a clock the spec moves: due tasks run in the
-- order of their times, then of their scheduling, as util.timer's do.
local function new_clock()
	local clock, seq = { now = 0, tasks = {} }, 0;
	local function schedule(task, at)
		seq = seq + 1;
		task.at, task.seq = at, seq;
		clock.tasks[task] = true;
	end
	function clock.add_task(delay, f)
		local task = { f = f };
		schedule(task, clock.now + delay);
		return task;
	end
	function clock.stop(task)
		clock.tasks[task] = nil;
	end
	function clock.advance(seconds)
		local target = clock.now + seconds;
		while true do
			local due;
			for task in pairs(clock.tasks) do
				if task.at <= target and (not due or task.at < due.at or (task.at == due.at and task.seq < due.seq)) then
					due = task;
				end
			end
			if not due then
				break;
			end
			clock.tasks[due] = nil;
			clock.now = due.at;
			local again = due.f();
			if again then
				schedule(due, clock.now + again);
			end
		end
		clock.now = target;
	end
	return clock;
end

-- A front over `nodes` whose requests land in `sent`.
local function new_front(nodes, listed)
	local clock, sent, logs = new_clock(), {}, {};
	local front = cluster.front({ host = "proxy.example", nodes = nodes, interval = 2, listed = listed or 1, st = st,
		timer = clock, now = function () return clock.now; end,
		log = function (level, fmt, ...) logs[#logs + 1] = level .. " " .. fmt:format(...); end,
		send = function (stanza) sent[#sent + 1] = stanza; end });
	return front, clock, sent, logs;
end

-- A node's answer to a load request.
local function load_reply(request, load, streamhosts)
	local reply = st.reply(request):tag("load", { xmlns = XMLNS, active = tostring(load.active or 0),
		pending = tostring(load.pending or 0), connections = tostring(load.connections or 0),
		["max-connections"] = tostring(load.max or 0), ["bytes-per-second"] = tostring(load.rate or 0) });
	for _, streamhost in ipairs(streamhosts) do
		reply:tag("streamhost", { jid = request.attr.to, host = streamhost[1], port = tostring(streamhost[2]) }):up();
	end
	return reply;
end

-- Answers every load request in `sent` from `answers[node jid]`:
-- { load, streamhosts }, or an error condition, or nothing (silence).
local function answer(front, sent, answers)
	for i = #sent, 1, -1 do
		local request = table.remove(sent, i);
		local child = request.tags[1];
		local a = answers[request.attr.to];
		if child.name == "load" and type(a) == "table" then
			assert.is_true(front:on_reply(load_reply(request, a[1], a[2])));
		elseif child.name == "load" and type(a) == "string" then
			assert.is_true(front:on_reply(st.error_reply(request, "cancel", a)));
		end
	end
end

local function first_jids(front, ip, n)
	local out = {};
	for i = 1, n do
		out[i] = front:streamhosts(ip)[1].jid;
	end
	return out;
end

describe("cproxy.proxy65.cluster's front", function ()
	local A, B, C = "a.example", "b.example", "c.example";

	it("lists no node before one has answered", function ()
		local front, _, sent = new_front({ A, B });
		front:start();
		assert.equal(2, #sent);
		assert.is_nil(front:streamhosts(nil));
		front:stop();
	end);

	it("puts the requester's address family first, then the least loaded; equals take turns", function ()
		local front, _, sent = new_front({ A, B, C });
		front:start();
		answer(front, sent, {
			[A] = { { active = 5 }, { { "192.0.2.1", 7777 } } },
			[B] = { { active = 1 }, { { "192.0.2.2", 7777 } } },
			[C] = { { active = 9 }, { { "2001:db8::3", 7777 }, { "192.0.2.3", 7777 } } },
		});
		assert.equal(C, front:streamhosts("2001:db8::1")[1].jid);
		assert.equal("2001:db8::3", front:streamhosts("2001:db8::1")[1].host);
		-- B has the least load; each answer counts against the node it
		-- named until its next report.
		assert.same({ B, B, B, B, A }, first_jids(front, "198.51.100.1", 5));
		front:stop();
	end);

	it("passes over a node at its connection cap", function ()
		local front, _, sent = new_front({ A, B });
		front:start();
		answer(front, sent, {
			[A] = { { active = 0, connections = 10, max = 10 }, { { "192.0.2.1", 7777 } } },
			[B] = { { active = 3 }, { { "192.0.2.2", 7777 } } },
		});
		assert.equal(B, front:streamhosts(nil)[1].jid);
		front:stop();
	end);

	it("lists as many nodes as asked, each one's streamhosts together", function ()
		local front, _, sent = new_front({ A, B }, 2);
		front:start();
		answer(front, sent, {
			[A] = { { active = 0 }, { { "192.0.2.1", 1 }, { "192.0.2.11", 2 } } },
			[B] = { { active = 1 }, { { "192.0.2.2", 3 } } },
		});
		local list = front:streamhosts(nil);
		assert.same({ A, A, B }, { list[1].jid, list[2].jid, list[3].jid });
		assert.same({ 1, 2, 3 }, { list[1].port, list[2].port, list[3].port });
		front:stop();
	end);

	it("drops a node that errs or falls silent, and takes it back when it answers", function ()
		local front, clock, sent, logs = new_front({ A, B });
		front:start();
		local answers = {
			[A] = { { active = 0 }, { { "192.0.2.1", 7777 } } },
			[B] = { { active = 0 }, { { "192.0.2.2", 7777 } } },
		};
		answer(front, sent, answers);
		assert.same({ A, B }, { first_jids(front, nil, 2)[1], first_jids(front, nil, 2)[2] }); -- both in
		answers[B] = nil; -- silent
		clock.advance(2); -- the next round
		answer(front, sent, answers);
		clock.advance(2); -- B's request times out; a new round
		assert.same({ A, A, A }, first_jids(front, nil, 3));
		assert.truthy(logs[#logs]:find("b.example is out of the list: no answer within 1.8 s", 1, true), logs[#logs]);
		answers[A] = "remote-server-timeout"; -- its server bounces
		answers[B] = { { active = 0 }, { { "192.0.2.2", 7777 } } };
		answer(front, sent, answers);
		assert.same({ B, B }, first_jids(front, nil, 2));
		front:stop();
		assert.is_nil(next(clock.tasks));
	end);

	it("takes an answer only from the node it asked, and a report's numbers only if sane", function ()
		local front, _, sent = new_front({ A, B });
		front:start();
		local forged = load_reply(sent[1], {}, { { "198.51.100.66", 1080 } });
		forged.attr.from = "mallory@example/x"; -- an id guessed by someone else
		assert.is_true(front:on_reply(forged));
		assert.is_nil(front:streamhosts(nil));
		-- B's report: a port out of range and counts that are not counts.
		local reply = load_reply(sent[2], { active = "-5", pending = "1e999" },
			{ { "192.0.2.2", 70000 }, { "192.0.2.2", 7.5 }, { "192.0.2.2", 5000 } });
		assert.is_true(front:on_reply(reply));
		local list = front:streamhosts(nil);
		assert.same({ B, 5000 }, { list[1].jid, list[1].port });
		assert.equal(1, #list);
		front:stop();
	end);

	it("puts last a node whose streamhosts its own check found unreachable", function ()
		local front, _, sent = new_front({ A, B });
		front:start();
		for i = #sent, 1, -1 do
			local request = table.remove(sent, i);
			local reply = load_reply(request, {}, { { "192.0.2." .. i, 7777 } });
			if request.attr.to == A then
				reply.tags[1].tags[1].attr.reachable = "false";
			end
			front:on_reply(reply);
		end
		assert.same({ B, B, B }, first_jids(front, nil, 3));
		front:stop();
	end);

	it("refuses an activation still waiting when it stops", function ()
		local front = new_front({ A });
		local result;
		front:activate("alice@example/r", "sid5", "bob@example/r", nil, function (...) result = { ... }; end);
		front:stop();
		assert.same({ false, "modify", "item-not-found" }, result);
	end);

	it("takes a late answer to a request that timed out as nothing", function ()
		local front, clock, sent = new_front({ A });
		front:start();
		local request = sent[1];
		clock.advance(2);
		assert.is_true(front:on_reply(load_reply(request, {}, { { "192.0.2.1", 1 } })));
		assert.is_false(front:on_reply(st.reply(st.iq({ type = "get", id = "someone-else", to = A }))));
		front:stop();
	end);

	describe("passing an activation on", function ()
		local function activations(sent)
			local out = {};
			for i = #sent, 1, -1 do
				if sent[i].tags[1].name == "activate" then
					out[#out + 1] = table.remove(sent, i);
				end
			end
			return out;
		end

		it("asks every node and answers with the one that activated it", function ()
			local front, _, sent = new_front({ A, B, C });
			local result;
			front:activate("alice@example/r", "sid1", "bob@example/r", nil, function (...) result = { ... }; end);
			local requests = activations(sent);
			assert.equal(3, #requests);
			assert.same({ "sid1", "alice@example/r", "bob@example/r" }, { requests[1].tags[1].attr.sid,
				requests[1].tags[1].attr.requester, requests[1].tags[1].attr.target });
			front:on_reply(st.error_reply(requests[1], "modify", "item-not-found"));
			assert.is_nil(result);
			front:on_reply(st.reply(requests[2]));
			assert.same({ true, requests[2].attr.to }, result);
			front:on_reply(st.error_reply(requests[3], "modify", "item-not-found")); -- after the end: ignored
		end);

		it("gives the most telling refusal when no node activated it", function ()
			local front, clock, sent = new_front({ A, B, C });
			local result;
			front:activate("alice@example/r", "sid2", "bob@example/r", nil, function (...) result = { ... }; end);
			local requests = activations(sent);
			front:on_reply(st.error_reply(requests[1], "modify", "item-not-found"));
			front:on_reply(st.error_reply(requests[2], "cancel", "not-allowed", "already active"));
			clock.advance(10); -- the third never answers
			assert.same({ false, "cancel", "not-allowed", "already active" }, result);
		end);

		it("answers item-not-found when no node holds it, or there is no node", function ()
			local front, _, sent = new_front({ A });
			local result;
			front:activate("alice@example/r", "sid3", "bob@example/r", nil, function (...) result = { ... }; end);
			front:on_reply(st.error_reply(activations(sent)[1], "modify", "item-not-found"));
			assert.same({ false, "modify", "item-not-found" }, result);
			front = new_front({});
			front:activate("alice@example/r", "sid4", "bob@example/r", nil, function (...) result = { ... }; end);
			assert.same({ false, "modify", "item-not-found" }, result);
		end);
	end);
end);
