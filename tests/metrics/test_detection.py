from __future__ import annotations

import importlib.util
import unittest

import torch

from monai_diffusion.metrics import auprc, auroc

HAS_SKLEARN = importlib.util.find_spec("sklearn") is not None


class TestAUROC(unittest.TestCase):
    def test_separated_reversed_and_tied(self):
        labels = torch.tensor([0, 0, 0, 1, 1])
        scores = torch.tensor([0.1, 0.2, 0.3, 0.7, 0.9])
        self.assertEqual(auroc(scores, labels), 1.0)
        self.assertEqual(auroc(-scores, labels), 0.0)
        self.assertEqual(auroc(torch.zeros(5), labels), 0.5)

    def test_hand_computed_with_ties(self):
        # pairs (positive, negative): (0.8 > 0.1), (0.8 > 0.4), (0.35 > 0.1), (0.35 < 0.4) -> 3/4
        self.assertAlmostEqual(auroc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1])), 0.75)
        # positives 0.5 and 0.2 against the negative 0.5: a tie (1/2) and a loss (0) -> 1/4
        self.assertAlmostEqual(auroc(torch.tensor([0.5, 0.5, 0.2]), torch.tensor([1, 0, 1])), 0.25)

    def test_pixel_maps_are_flattened(self):
        labels = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
        labels[:, :, 1:3, 1:3] = True
        self.assertEqual(auroc(labels.float() * 2 + 1, labels), 1.0)

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, "both classes"):
            auroc(torch.rand(4), torch.ones(4))
        with self.assertRaisesRegex(ValueError, "same shape"):
            auroc(torch.rand(4), torch.ones(5))
        with self.assertRaisesRegex(ValueError, "binary"):
            auroc(torch.rand(3), torch.tensor([0, 1, 2]))
        with self.assertRaisesRegex(TypeError, "scores must be a torch.Tensor"):
            auroc([0.1, 0.2], torch.tensor([0, 1]))  # type: ignore[arg-type]


class TestAUPRC(unittest.TestCase):
    def test_hand_computed(self):
        # descending: 0.8 (+) P=1 R=1/2; 0.4 (-); 0.35 (+) P=2/3 R=1 -> AP = 1/2 * 1 + 1/2 * 2/3 = 5/6
        self.assertAlmostEqual(auprc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1])), 5 / 6)
        # ties enter as one step: t=0.5 -> P=1/2 R=1/2; t=0.2 -> P=2/3 R=1 -> AP = 1/4 + 1/3
        self.assertAlmostEqual(auprc(torch.tensor([0.5, 0.5, 0.2]), torch.tensor([1, 0, 1])), 7 / 12)
        # the order of tied items does not matter
        self.assertAlmostEqual(auprc(torch.tensor([0.5, 0.5, 0.2]), torch.tensor([0, 1, 1])), 7 / 12)
        # perfect ranking -> 1; all tied -> the positive rate
        self.assertEqual(auprc(torch.tensor([0.9, 0.8, 0.1]), torch.tensor([1, 1, 0])), 1.0)
        self.assertAlmostEqual(auprc(torch.zeros(5), torch.tensor([1, 0, 0, 0, 1])), 2 / 5)

    def test_worst_ranking(self):
        # positives ranked last among n items: AP = mean over k of k / (n_neg + k)
        scores = torch.arange(6.0)
        labels = torch.tensor([1, 1, 0, 0, 0, 0])
        self.assertAlmostEqual(auprc(scores, labels), (1 / 5 + 2 / 6) / 2)

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, "no positive"):
            auprc(torch.rand(4), torch.zeros(4))
        with self.assertRaisesRegex(ValueError, "nan"):
            auprc(torch.tensor([0.1, float("nan")]), torch.tensor([0, 1]))


@unittest.skipUnless(HAS_SKLEARN, "scikit-learn not installed")
class TestAgainstScikitLearn(unittest.TestCase):
    def test_random_scores_with_ties(self):
        from sklearn.metrics import average_precision_score, roc_auc_score

        g = torch.Generator().manual_seed(0)
        for n, p in ((50, 0.3), (2000, 0.05)):
            labels = torch.rand(n, generator=g) < p
            scores = torch.round(5 * (labels.float() + torch.rand(n, generator=g))) / 5  # many ties
            self.assertAlmostEqual(auroc(scores, labels), roc_auc_score(labels.numpy(), scores.numpy()), places=10)
            self.assertAlmostEqual(
                auprc(scores, labels), average_precision_score(labels.numpy(), scores.numpy()), places=10
            )


if __name__ == "__main__":
    unittest.main()
