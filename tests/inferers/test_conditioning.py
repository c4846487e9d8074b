from __future__ import annotations

import unittest

import torch
from parameterized import parameterized

from monai_diffusion.inferers.conditioning import (
    NullCondition,
    as_condition_dict,
    drop_condition,
    network_inputs,
    validate_condition,
)
from tests.test_utils import make_input, spatial_cases


class TestConditionDict(unittest.TestCase):
    def test_modes(self):
        t = torch.zeros(2, 3, 4)
        self.assertEqual(list(as_condition_dict(t, "crossattn")), ["crossattn"])
        self.assertEqual(list(as_condition_dict(t, "concat")), ["concat"])
        labels = torch.tensor([0, 1])
        self.assertEqual(list(as_condition_dict(labels, "class_label")), ["class_label"])
        pair = as_condition_dict((torch.zeros(2, 1, 4, 4), t), "concat_crossattn")
        self.assertEqual(sorted(pair), ["concat", "crossattn"])
        self.assertEqual(as_condition_dict(None, "concat"), {})

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, "unknown conditioning mode"):
            as_condition_dict(torch.zeros(2), "film")
        with self.assertRaisesRegex(ValueError, "unknown conditioning keys"):
            as_condition_dict({"context": torch.zeros(2)}, None)
        with self.assertRaisesRegex(ValueError, "concat_crossattn"):
            as_condition_dict(torch.zeros(2, 1, 4, 4), "concat_crossattn")
        with self.assertRaisesRegex(TypeError, "torch.Tensor"):
            as_condition_dict([1, 2], "class_label")

    @parameterized.expand(spatial_cases(channels=2))
    def test_validate_and_inputs(self, _, shape):
        x = make_input(shape)
        cond = {
            "concat": make_input((1, 1, *shape[2:])),
            "crossattn": make_input((shape[0], 3, 8)),
            "class_label": torch.tensor(1),
        }
        valid = validate_condition(cond, x)
        self.assertEqual(tuple(valid["concat"].shape), (shape[0], 1, *shape[2:]))
        self.assertEqual(valid["class_label"].tolist(), [1] * shape[0])
        x_in, kwargs = network_inputs(x, valid)
        self.assertEqual(x_in.shape[1], shape[1] + 1)
        self.assertEqual(sorted(kwargs), ["class_labels", "context"])

    @parameterized.expand(spatial_cases())
    def test_validate_errors(self, _, shape):
        x = make_input(shape)
        with self.assertRaisesRegex(ValueError, "'concat' conditioning must have shape"):
            validate_condition({"concat": torch.zeros(shape[0], 1, 3, 3)}, x)
        with self.assertRaisesRegex(ValueError, r"\(B, L, D\)"):
            validate_condition({"crossattn": torch.zeros(shape[0], 4)}, x)
        with self.assertRaisesRegex(ValueError, "batch size"):
            validate_condition({"crossattn": torch.zeros(shape[0] + 1, 2, 4)}, x)
        with self.assertRaisesRegex(TypeError, "integer class ids"):
            validate_condition({"class_label": torch.zeros(shape[0])}, x)


class TestNullCondition(unittest.TestCase):
    def test_null_like(self):
        null = NullCondition(class_label=5, context_shape=(2, 4), fill_value=-1.0)
        self.assertEqual(null.keys, ("concat", "crossattn", "class_label"))
        self.assertEqual(len(list(null.parameters())), 1)  # the learned null embedding
        cond = {
            "concat": torch.ones(3, 1, 4, 4),
            "crossattn": torch.ones(3, 2, 4),
            "class_label": torch.tensor([0, 1, 2]),
            "classifier_label": torch.tensor([1, 1, 1]),
        }
        out = null.null_like(cond)
        self.assertTrue(torch.all(out["concat"] == -1))
        self.assertTrue(torch.all(out["crossattn"] == 0))
        self.assertEqual(out["class_label"].tolist(), [5, 5, 5])
        self.assertEqual(out["classifier_label"].tolist(), [1, 1, 1])  # never nulled

    def test_missing_null(self):
        with self.assertRaisesRegex(ValueError, "at least one"):
            NullCondition()
        with self.assertRaisesRegex(ValueError, "missing null condition"):
            NullCondition(class_label=3).null_like({"crossattn": torch.ones(2, 1, 4)})
        with self.assertRaisesRegex(ValueError, "null context has shape"):
            NullCondition(context=torch.zeros(1, 3)).null_like({"crossattn": torch.ones(2, 1, 4)})

    def test_negative_class_label_rejected(self):
        with self.assertRaisesRegex(ValueError, "non-negative class id, got -1"):
            NullCondition(class_label=-1)

    def test_partial_null_keeps_other_keys(self):
        null = NullCondition(class_label=9)
        cond = {"concat": torch.ones(2, 1, 4, 4), "class_label": torch.tensor([0, 1])}
        out = null.null_like(cond)
        self.assertTrue(torch.equal(out["concat"], cond["concat"]))
        self.assertEqual(out["class_label"].tolist(), [9, 9])

    def test_dropout(self):
        null = NullCondition(class_label=7, fill_value=0.0)
        cond = {"class_label": torch.arange(400) % 3, "concat": torch.ones(400, 1, 2, 2)}
        kept = drop_condition(cond, null, 0.0)
        self.assertTrue(torch.equal(kept["class_label"], cond["class_label"]))
        dropped = drop_condition(cond, null, 1.0)
        self.assertTrue(torch.all(dropped["class_label"] == 7))
        a = drop_condition(cond, null, 0.3, torch.Generator().manual_seed(1))
        b = drop_condition(cond, null, 0.3, torch.Generator().manual_seed(1))
        self.assertTrue(torch.equal(a["class_label"], b["class_label"]))
        is_null = a["class_label"] == 7
        # keys of one sample are dropped together
        self.assertTrue(torch.equal(is_null, a["concat"].flatten(1).eq(0).all(1)))
        self.assertGreater(is_null.float().mean().item(), 0.2)
        self.assertLess(is_null.float().mean().item(), 0.4)
        with self.assertRaisesRegex(ValueError, r"\[0, 1\]"):
            drop_condition(cond, null, 1.5)


if __name__ == "__main__":
    unittest.main()
