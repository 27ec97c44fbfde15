"""Linkage check for the shaded Beam Flink job server jar.

The jar mixes one Beam module of an older release (beam-runners-java-job-service,
see pom.xml) with the rest of the runner's release. A mismatch would only show at
run time, as NoSuchMethodError or NoClassDefFoundError in the middle of a job. This
reads the class files directly and fails unless every field and method that the
classes under the given packages reference in ``org/apache/beam/**`` exists in the
jar (looked up in the owner class, its superclasses and interfaces, as the JVM
resolves them).

    python linkcheck.py JAR PACKAGE_PREFIX...     # exit 1 on any unresolved reference

Members inherited from JDK classes other than java.lang.Object are not checked
(counted in the last line). Verified on this jar: Beam 2.70.0 with job service
2.65.0 resolves all; with job service 2.62.0 it reports 4 unresolved references.
"""

from __future__ import annotations

import struct
import sys
import zipfile

OBJECT_METHODS = {"<init>", "hashCode", "equals", "toString", "getClass", "notify",
                  "notifyAll", "wait", "clone", "finalize"}
FIELD_REF, METHOD_REF, INTERFACE_METHOD_REF = 9, 10, 11


def parse_class(data: bytes):
    """(name, superclass, interfaces, {(member, descriptor)}, [(owner, member, descriptor)])."""
    (count,) = struct.unpack_from(">H", data, 8)
    pool: list = [None] * count
    pos, i = 10, 1
    while i < count:
        tag = data[pos]
        pos += 1
        if tag == 1:  # Utf8
            (n,) = struct.unpack_from(">H", data, pos)
            pool[i] = data[pos + 2:pos + 2 + n].decode("utf-8", "replace")
            pos += 2 + n
        elif tag in (3, 4):  # Integer, Float
            pos += 4
        elif tag in (5, 6):  # Long, Double take two slots
            pos += 8
            i += 1
        elif tag in (7, 8, 16, 19, 20):  # Class, String, MethodType, Module, Package
            pool[i] = (tag, struct.unpack_from(">H", data, pos)[0])
            pos += 2
        elif tag in (9, 10, 11, 12, 17, 18):  # refs, NameAndType, (Invoke)Dynamic
            pool[i] = (tag, *struct.unpack_from(">HH", data, pos))
            pos += 4
        elif tag == 15:  # MethodHandle
            pos += 3
        else:
            raise ValueError(f"unknown constant pool tag {tag}")
        i += 1

    def class_name(index: int) -> str:
        return pool[pool[index][1]]

    _, this, sup, n_ifaces = struct.unpack_from(">HHHH", data, pos)
    pos += 8
    ifaces = [class_name(struct.unpack_from(">H", data, pos + 2 * j)[0]) for j in range(n_ifaces)]
    pos += 2 * n_ifaces
    members = set()
    for _ in range(2):  # fields, then methods
        (n,) = struct.unpack_from(">H", data, pos)
        pos += 2
        for _ in range(n):
            _, name, desc, n_attrs = struct.unpack_from(">HHHH", data, pos)
            pos += 8
            members.add((pool[name], pool[desc]))
            for _ in range(n_attrs):
                (length,) = struct.unpack_from(">I", data, pos + 2)
                pos += 6 + length
    refs = []
    for entry in pool:
        if isinstance(entry, tuple) and entry[0] in (FIELD_REF, METHOD_REF, INTERFACE_METHOD_REF):
            _, owner, name_and_type = entry
            _, name, desc = pool[name_and_type]
            refs.append((class_name(owner), pool[name], pool[desc]))
    return class_name(this), (class_name(sup) if sup else None), ifaces, members, refs


def load(jar: str) -> dict:
    classes = {}
    with zipfile.ZipFile(jar) as z:
        for name in z.namelist():
            if name.endswith(".class") and not name.startswith("META-INF/"):
                this, sup, ifaces, members, refs = parse_class(z.read(name))
                classes[this] = (sup, ifaces, members, refs)
    return classes


def resolves(classes: dict, owner: str, name: str, desc: str, seen: set) -> bool | None:
    """True: found; None: not found, but a JDK ancestor might declare it; False: absent."""
    if owner in seen:
        return False
    seen.add(owner)
    if owner == "java/lang/Object":
        return name in OBJECT_METHODS
    if owner not in classes:
        return None
    sup, ifaces, members, _ = classes[owner]
    if (name, desc) in members:
        return True
    result: bool | None = False
    for parent in ([sup] if sup else []) + ifaces:
        found = resolves(classes, parent, name, desc, seen)
        if found:
            return True
        if found is None:
            result = None
    return result


def main(jar: str, prefixes: list[str]) -> int:
    classes = load(jar)
    checked = unresolved = unchecked = 0
    for this, (_, _, _, refs) in sorted(classes.items()):
        if not this.startswith(tuple(prefixes)):
            continue
        for owner, name, desc in refs:
            if not owner.startswith("org/apache/beam/"):
                continue
            checked += 1
            if owner not in classes:
                unresolved += 1
                print(f"unresolved class {owner} (referenced from {this})")
                continue
            found = resolves(classes, owner, name, desc, set())
            if found is None:
                unchecked += 1
            elif not found:
                unresolved += 1
                print(f"unresolved member {owner}.{name}{desc} (referenced from {this})")
    print(f"linkcheck: {checked} references from {', '.join(prefixes)}: "
          f"{unresolved} unresolved, {unchecked} inherited from JDK classes (not checked)")
    return 1 if unresolved or not checked else 0


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2:]))
