"""List the ufw rules this role added that its variables no longer name.

argv[1]: JSON {"admin_sources": [...], "ssh_port": int, "wireguard_port": int,
"tunnel_interface": str, "tunnel_network": str, "tunnel_tcp_ports": [...]}; optional
"rules_files": the ufw user rules files to read (default: those ufw and community.general.ufw use).
Prints JSON {"owned": N, "stale": [rule, ...]}, each stale rule as the parameters of a
community.general.ufw task that deletes it. Runs on the managed host with its python3, changes
nothing; a host without ufw (no rules files) has no stale rule.

The role owns exactly the rules it adds: those whose comment is one of OWNED_COMMENTS below
(ufw stores comments hex-encoded in the "### tuple ###" lines of user.rules and user6.rules). A
rule of the operator's own, without those comments, is never listed. Addresses are compared as
networks (192.0.2.7/24 is 192.0.2.0/24, 0.0.0.0/0 and ::/0 are "any"), as ufw normalises them.
"""

import ipaddress
import json
import sys

SSH = "vps_brain admin ssh"
WIREGUARD = "vps_brain wireguard"
TUNNEL = "vps_brain tunnel only"
OWNED_COMMENTS = (SSH, WIREGUARD, TUNNEL)

RULES_FILES = (
    "/etc/ufw/user.rules",
    "/etc/ufw/user6.rules",
    "/lib/ufw/user.rules",
    "/lib/ufw/user6.rules",
    "/var/lib/ufw/user.rules",
    "/var/lib/ufw/user6.rules",
)
TUPLE = "### tuple ###"


def address(text):
    """An address as ufw compares it: "any", or the canonical network."""
    text = str(text).strip()
    if text in ("any", "0.0.0.0/0", "::/0"):
        return "any"
    return str(ipaddress.ip_network(text, strict=False))


def wanted(args):
    """The keys (comment, action, proto, dport, dst, sport, src, ifaces) of every rule to keep."""
    keys = set()
    for source in args["admin_sources"]:
        keys.add((SSH, "allow", "tcp", str(args["ssh_port"]), "any", "any", address(source), "in"))
    if args["wireguard_port"] > 0:
        port = str(args["wireguard_port"])
        keys.add((WIREGUARD, "allow", "udp", port, "any", "any", "any", "in"))
    ifaces = "in_" + args["tunnel_interface"]
    network = address(args["tunnel_network"])
    for port in args["tunnel_tcp_ports"]:
        keys.add((TUNNEL, "allow", "tcp", str(port), "any", "any", network, ifaces))
    return keys


def owned_rules(lines):
    """Yield (key, tuple fields) of the owned rules among ufw's user rules LINES."""
    for line in lines:
        if not line.startswith(TUPLE):
            continue
        body, _sep, comment_hex = line[len(TUPLE) :].partition(" comment=")
        try:
            comment = bytes.fromhex(comment_hex.strip()).decode("utf-8")
        except ValueError:
            continue
        fields = body.split()
        # Seven fields: action proto dport dst sport src direction[_interface]. Application
        # rules (nine fields) and route rules ("route:allow") are never the role's.
        if comment not in OWNED_COMMENTS or len(fields) != 7 or ":" in fields[0]:
            continue
        action, proto, dport, dst, sport, src, ifaces = fields
        try:
            key = (comment, action, proto, dport, address(dst), sport, address(src), ifaces)
        except ValueError:
            continue
        yield key, fields


def main():
    args = json.loads(sys.argv[1])
    lines = []
    for path in args.get("rules_files") or RULES_FILES:
        try:
            with open(path, encoding="utf-8") as handle:
                lines.extend(handle.read().splitlines())
        except FileNotFoundError:
            continue
    keep = wanted(args)
    owned = 0
    stale = []
    for key, (action, proto, dport, dst, _sport, src, ifaces) in owned_rules(lines):
        owned += 1
        if key in keep:
            continue
        direction, _sep, interface = ifaces.partition("_")
        rule = {
            "rule": action,
            "proto": proto,
            "from_ip": "any" if address(src) == "any" else src,
            "to_ip": "any" if address(dst) == "any" else dst,
            "to_port": dport,
            "direction": direction,
            "interface": interface or None,
            "comment": key[0],
        }
        # An "any" rule is stored once per family; one ufw delete removes both.
        if rule not in stale:
            stale.append(rule)
    print(json.dumps({"owned": owned, "stale": stale}))


if __name__ == "__main__":
    main()
