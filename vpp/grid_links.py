"""Grid links named on the ``vpp serve`` command line: the OpenADR 2.0b VEN and the IEC 104 outstation.

``vpp serve --openadr-vtn URL`` registers the park with a utility's VTN
(``adapters.openadr``); ``--iec104`` (implied by ``--demo --protocols``)
listens for a dispatch centre's IEC 60870-5-104 master (``adapters.iec104``).
Both may run with or without the demo park.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from adapters.base import GridLink
from vpp.clock import Clock
from vpp.errors import InvalidInput

__all__ = ["add_grid_link_args", "grid_links_from_args"]


def add_grid_link_args(serve: argparse.ArgumentParser) -> None:
    """The serve options of the grid links."""
    group = serve.add_argument_group("grid links")
    group.add_argument("--iec104", action="store_true", help="run the IEC 104 outstation (on --iec104-port)")
    group.add_argument("--openadr-vtn", metavar="URL", default=None,
                       help="register as an OpenADR 2.0b VEN with this VTN, e.g. https://vtn:8080/OpenADR2/Simple/2.0b")
    group.add_argument("--openadr-ven-name", default="park", help="name the VEN registers with (default park)")
    group.add_argument("--openadr-cert", type=Path, default=None, help="VEN certificate (PEM): TLS client and message signing")
    group.add_argument("--openadr-key", type=Path, default=None, help="private key of --openadr-cert (PEM)")
    group.add_argument("--openadr-ca", type=Path, default=None, help="CA bundle that signed the VTN's certificate (PEM)")
    group.add_argument("--openadr-vtn-fingerprint", default=None,
                       help="fingerprint of the VTN's certificate; its signed messages are checked against it")


def grid_links_from_args(args: argparse.Namespace, clock: Clock) -> list[GridLink]:
    """The grid links the options ask for (the IEC 104 one only with ``--iec104``).

    Raises InvalidInput naming the option when a certificate file is missing
    or only one of certificate and key is given.
    """
    links: list[GridLink] = []
    if getattr(args, "iec104", False):
        from adapters.iec104 import Iec104Outstation

        links.append(Iec104Outstation(clock, host=args.host, port=args.iec104_port))
    if getattr(args, "openadr_vtn", None):
        from adapters.openadr import OpenAdrVen

        if (args.openadr_cert is None) != (args.openadr_key is None):
            raise InvalidInput("--openadr-key", "give both --openadr-cert and --openadr-key, or neither")
        for option, path in (("--openadr-cert", args.openadr_cert), ("--openadr-key", args.openadr_key),
                             ("--openadr-ca", args.openadr_ca)):
            if path is not None and not path.is_file():
                raise InvalidInput(option, f"{path} is not a readable file")
        links.append(
            OpenAdrVen(
                args.openadr_vtn, args.openadr_ven_name, clock,
                cert_path=args.openadr_cert, key_path=args.openadr_key, ca_path=args.openadr_ca,
                vtn_fingerprint=args.openadr_vtn_fingerprint,
            )
        )
    return links
