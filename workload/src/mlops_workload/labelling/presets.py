"""Label configs: the named presets, and how a config says what its tasks hold.

Classification presets get an extra choice, ``unsure``, for an annotator to say the item is
ambiguous; the consistency report lists such tasks as ambiguous rather than as disagreement.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

UNSURE = "unsure"
_VARIABLE = re.compile(r'value="\$([A-Za-z_][A-Za-z0-9_]*)"')


@dataclass(frozen=True)
class Preset:
    """A named label config template, and the task field its items go into."""

    name: str
    data_key: str
    template: str
    adds_unsure: bool


PRESETS = {
    "text-classification": Preset(
        "text-classification",
        "text",
        '<View>\n  <Text name="text" value="$text"/>\n'
        '  <Choices name="label" toName="text" choice="single" showInline="true">\n'
        "{choices}  </Choices>\n</View>\n",
        adds_unsure=True,
    ),
    "image-classification": Preset(
        "image-classification",
        "image",
        '<View>\n  <Image name="image" value="$image"/>\n'
        '  <Choices name="label" toName="image" choice="single" showInline="true">\n'
        "{choices}  </Choices>\n</View>\n",
        adds_unsure=True,
    ),
    "named-entities": Preset(
        "named-entities",
        "text",
        '<View>\n  <Labels name="label" toName="text">\n'
        '{labels}  </Labels>\n  <Text name="text" value="$text"/>\n</View>\n',
        adds_unsure=False,
    ),
}


def render(preset_name: str, labels: list[str]) -> str:
    """The label config of a preset with the given labels."""
    preset = PRESETS[preset_name]
    if preset.adds_unsure and UNSURE not in labels:
        labels = [*labels, UNSURE]
    choices = "".join(f"    <Choice value={quoteattr(label)}/>\n" for label in labels)
    spans = "".join(f"    <Label value={quoteattr(label)}/>\n" for label in labels)
    return preset.template.format(choices=choices, labels=spans)


def data_key(label_config: str) -> str:
    """The task field a label config reads its item from (``$text`` or ``$image``)."""
    variables = set(_VARIABLE.findall(label_config))
    for key in ("image", "text"):
        if key in variables:
            return key
    raise ValueError("the label config reads neither $text nor $image")
