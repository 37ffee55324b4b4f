"""Validate the firewall's networks and check the Ansible connection against the admin sources.

argv[1]: JSON {"admin_sources": [...], "tunnel_network": str, "controller": str}. Prints JSON.
Runs on the managed host with its python3 (the ipaddress module), changes nothing.
"""

import ipaddress
import json
import sys


def network(text):
    try:
        return ipaddress.ip_network(str(text).strip(), strict=False)
    except ValueError:
        return None


def main():
    args = json.loads(sys.argv[1])
    sources = [(text, network(text)) for text in args["admin_sources"]]
    result = {
        "invalid_sources": [text for text, net in sources if net is None],
        "tunnel_network_valid": network(args["tunnel_network"]) is not None
        and "/" in args["tunnel_network"],
        "controller_valid": True,
        "controller_covered": None,
        "covering": [],
    }
    if args["controller"]:
        try:
            controller = ipaddress.ip_address(args["controller"].split("%")[0])
        except ValueError:
            result["controller_valid"] = False
        else:
            if controller.version == 6 and controller.ipv4_mapped:
                controller = controller.ipv4_mapped
            result["covering"] = [
                text for text, net in sources if net is not None and controller in net
            ]
            result["controller_covered"] = bool(result["covering"])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
